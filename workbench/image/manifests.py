"""Manifests and indexes from a registry: media types, platform selection, fetching and verifying.

OCI and docker schema 2 manifests, and their indexes / manifest lists (the platform is picked). Every
manifest is verified against its digest; one the content store holds (by digest) is not fetched again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from workbench.http.errors import HttpError
from workbench.image.content import ContentStore
from workbench.image.reference import Reference
from workbench.image.registry_client import RegistryClient
from workbench.image.registry_errors import RegistryError, reason

MAX_MANIFEST = 4 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}


def _parse_platform(platform: str) -> tuple[str, str, str]:
    parts = platform.lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"invalid platform {platform!r} (want os/arch[/variant])")
    os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else ""
    if arch == "arm64" and variant in ("", "8"):
        variant = "v8"
    return os_, arch, variant


def select_platform(index: dict[str, Any], platform: str, what: str = "the index") -> dict[str, Any]:
    """The descriptor in an index / manifest list for `platform` ("os/arch[/variant]")."""
    want_os, want_arch, want_variant = _parse_platform(platform)
    best: tuple[int, dict[str, Any]] | None = None
    seen = []
    for desc in index.get("manifests") or []:
        p = desc.get("platform") or {}
        if (desc.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        os_, arch = p.get("os", ""), _ARCH_ALIASES.get(p.get("architecture", ""), p.get("architecture", ""))
        variant = p.get("variant", "") or ("v8" if arch == "arm64" else "")
        seen.append("/".join(x for x in (os_, arch, p.get("variant", "")) if x))
        if os_ != want_os or arch != want_arch:
            continue
        if want_variant and variant and variant != want_variant:
            continue
        score = 2 if variant == want_variant else 1
        if best is None or score > best[0]:
            best = (score, desc)
    if best is None:
        have = ", ".join(sorted(set(seen))) or "nothing"
        raise RegistryError(f"no image for platform {platform} in {what} (it has: {have})")
    return best[1]


def _check_manifest(raw: bytes, digest: str, content_type: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{what}: manifest {digest} is not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: manifest {digest} is not a JSON object")
    if doc.get("schemaVersion") == 1:
        raise RegistryError(f"{what}: docker schema 1 manifests are not supported")
    media = doc.get("mediaType") or content_type
    if not media:
        media = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        doc.setdefault("mediaType", media)
    if media not in INDEX_TYPES + MANIFEST_TYPES:
        raise RegistryError(f"{what}: unsupported manifest media type {media!r}")
    if media in MANIFEST_TYPES and not isinstance(doc.get("config"), dict):
        raise RegistryError(f"{what}: manifest {digest} has no config descriptor")
    doc["mediaType"] = media  # so callers can tell an index from an image
    return doc


def fetch_manifest(client: RegistryClient, reference: str, store: ContentStore | None = None
                   ) -> tuple[str, bytes, dict[str, Any]]:
    """(digest, raw bytes, document) of the manifest or index `reference` (a tag or digest), verified, and
    written to `store` if given (a digest the store holds is read from it, not fetched)."""
    ref = client.ref
    by_digest = reference.startswith("sha256:")
    if by_digest and store is not None and store.has(reference):
        raw = store.read(reference)
        return reference, raw, _check_manifest(raw, reference, "", str(ref))
    with client.open(f"/manifests/{reference}", "pulling manifest", ACCEPT) as resp:
        try:
            raw = resp.read(MAX_MANIFEST + 1)
        except HttpError as e:
            raise RegistryError(f"reading manifest for {ref} from {ref.registry}: {reason(e)}") from None
        content_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        header_digest = resp.headers.get("Docker-Content-Digest") or ""
    if len(raw) > MAX_MANIFEST:
        raise RegistryError(f"manifest for {ref} from {ref.registry} is larger than {MAX_MANIFEST} bytes")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if by_digest and digest != reference:
        raise RegistryError(f"manifest for {ref} from {ref.registry} failed verification: "
                            f"its content is {digest}, not {reference}")
    if header_digest.startswith("sha256:") and header_digest != digest:
        raise RegistryError(f"manifest for {ref} from {ref.registry} failed verification: registry says "
                            f"{header_digest}, content is {digest}")
    if content_type in ("application/json", "text/plain", "application/octet-stream"):
        content_type = ""
    doc = _check_manifest(raw, digest, content_type, str(ref))
    if store is not None:
        store.write(raw, digest)
    return digest, raw, doc


def resolve_platform(client: RegistryClient, platform: str, store: ContentStore | None
                     ) -> tuple[str, dict[str, Any], bytes]:
    """(digest, manifest, raw bytes) of the client's reference for `platform`, through its indexes."""
    ref = client.ref
    target = ref.digest or ref.tag or "latest"
    for _ in range(3):  # an index may point at an index (rare); never loop forever
        digest, raw, doc = fetch_manifest(client, target, store)
        if doc["mediaType"] not in INDEX_TYPES:
            return digest, doc, raw
        target = str(select_platform(doc, platform, f"{ref} ({digest})")["digest"])
    raise RegistryError(f"{ref}: indexes nested too deeply")


def resolve(ref: Reference, platform: str = "linux/amd64") -> tuple[str, dict[str, Any], bytes]:
    """(manifest digest, manifest, raw manifest bytes) of `ref`'s image for `platform`, from the registry."""
    return resolve_platform(RegistryClient(ref), platform, None)
