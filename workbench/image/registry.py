"""Pull from an OCI distribution registry: manifests (OCI, docker schema 2, indexes), config and layer blobs.

Plain HTTP for localhost / 127.0.0.1 / ::1, HTTPS elsewhere; anonymous bearer tokens on a 401 challenge.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.image.content import ContentStore, DigestMismatch
from workbench.image.reference import Reference

TIMEOUT = 30
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
ACCEPT = ", ".join(INDEX_TYPES + ("application/vnd.oci.image.manifest.v1+json",
                                  "application/vnd.docker.distribution.manifest.v2+json"))


class RegistryError(Exception):
    pass


@dataclass
class PulledImage:
    reference: Reference
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_digest: str
    layers: list[dict[str, Any]]


class _Client:
    def __init__(self, ref: Reference) -> None:
        self.ref = ref
        host = ref.registry.rsplit(":", 1)[0].strip("[]")
        scheme = "http" if host in ("localhost", "127.0.0.1", "::1") else "https"
        self.base = f"{scheme}://{ref.registry}/v2/{ref.repository}"
        self.token: str | None = None

    def get(self, path: str, accept: str = "*/*") -> Any:
        for attempt in range(2):
            req = urllib.request.Request(self.base + path, headers={"Accept": accept})
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                return urllib.request.urlopen(req, timeout=TIMEOUT)
            except urllib.error.HTTPError as e:
                if e.code == 401 and attempt == 0 and self._authenticate(e.headers.get("WWW-Authenticate", "")):
                    continue
                if e.code == 404:
                    raise RegistryError(f"{self.ref}: not found ({path.split('/')[1]} unknown)") from None
                raise RegistryError(f"{self.ref}: registry answered {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise RegistryError(f"cannot reach registry {self.ref.registry} for {self.ref}: {reason}") from None
        raise RegistryError(f"{self.ref}: authentication failed")

    def _authenticate(self, challenge: str) -> bool:
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            return False
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.ref.repository}:pull")
        url = params["realm"] + "?" + urllib.parse.urlencode(query)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
                doc = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RegistryError(f"{self.ref}: getting a token from {params['realm']} failed: {e}") from None
        self.token = doc.get("token") or doc.get("access_token")
        return bool(self.token)


def _pick_platform(index: dict[str, Any], platform: str, ref: Reference) -> str:
    os_, _, arch = platform.partition("/")
    for m in index.get("manifests", []):
        p = m.get("platform", {})
        if p.get("os") == os_ and p.get("architecture") == arch:
            return str(m["digest"])
    raise RegistryError(f"{ref}: no image for platform {platform}")


def resolve(ref: Reference, platform: str = "linux/amd64") -> tuple[str, dict[str, Any], bytes]:
    """(manifest digest, manifest, raw bytes) of the image for `platform`."""
    client = _Client(ref)
    return _resolve(client, ref, platform)


def _resolve(client: _Client, ref: Reference, platform: str) -> tuple[str, dict[str, Any], bytes]:
    import hashlib

    target = ref.digest or ref.tag or "latest"
    for _ in range(2):
        with client.get(f"/manifests/{target}", ACCEPT) as resp:
            raw = resp.read()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if target.startswith("sha256:") and digest != target:
            raise RegistryError(f"{ref}: manifest digest {digest} does not match {target}")
        doc = json.loads(raw)
        if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
            target = _pick_platform(doc, platform, ref)
            continue
        return digest, doc, raw
    raise RegistryError(f"{ref}: nested index")


def pull(ref: Reference, store: ContentStore, platform: str = "linux/amd64",
         progress: Callable[[str, int, int], None] | None = None) -> PulledImage:
    """Resolve `ref` and fetch its config and layers into `store` (blobs already there are skipped)."""
    client = _Client(ref)
    digest, manifest, raw = _resolve(client, ref, platform)
    if not store.has(digest):
        store.write(raw, digest)
    blobs = [manifest["config"]] + list(manifest.get("layers", []))
    for desc in blobs:
        d = desc["digest"]
        if store.has(d):
            continue
        total = int(desc.get("size", 0))
        with client.get(f"/blobs/{d}") as resp:
            try:
                with store.writer(d) as w:
                    while chunk := resp.read(1 << 20):
                        w.write(chunk)
                        if progress:
                            progress(f"downloading {d[:19]}", w.size, total)
            except DigestMismatch as e:
                raise RegistryError(f"{ref}: blob {d}: {e}") from None
    config = json.loads(store.read(manifest["config"]["digest"]))
    return PulledImage(ref, digest, manifest, config, manifest["config"]["digest"], list(manifest.get("layers", [])))
