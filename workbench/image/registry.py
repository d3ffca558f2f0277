"""Pull images from an OCI distribution (v2) registry.

Plain HTTP for localhost / 127.0.0.1 / ::1 (any port), HTTPS elsewhere. Auth: on a 401 challenge, a Bearer
token from the realm (anonymous, or with basic credentials from ~/.docker/config.json "auths"), or Basic with
those credentials. Manifests: OCI and docker schema 2, and their indexes / manifest lists (the platform is
picked). Every manifest and blob is verified against its digest; blobs already in the content store are not
fetched again, and a pull by digest whose blobs are all present does not touch the network.

The stdlib HTTP modules are imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.image.content import ContentStore, DigestMismatch
from workbench.image.reference import Reference

if TYPE_CHECKING:
    import urllib.request
    from http.client import HTTPResponse

TIMEOUT = 30.0  # seconds, for connecting and for each read
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_HUB_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io")
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}

Progress = Callable[[str, int, int], None]


class RegistryError(Exception):
    """A pull failed; the message names the registry or reference and what went wrong."""


@dataclass
class PulledImage:
    """An image whose manifest, config and layer blobs are all in the content store."""

    reference: Reference
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_digest: str
    layers: list[dict[str, Any]]


# -- host, credentials -----------------------------------------------------------------------------------------


def _host(registry: str) -> str:
    """The host name of "host[:port]" or "[v6]:port"."""
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_local(registry: str) -> bool:
    """Loopback registries are spoken to over plain HTTP."""
    return _host(registry) in _LOCAL_HOSTS


def docker_credentials(registry: str, config_dir: Path | None = None) -> tuple[str, str] | None:
    """(user, password) for `registry` from docker's config.json "auths" ($DOCKER_CONFIG or ~/.docker), if any."""
    import base64

    if config_dir is None:
        config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        auths = json.loads((config_dir / "config.json").read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    wanted = set(_HUB_HOSTS) if registry in _HUB_HOSTS else {registry}
    for key, entry in auths.items():
        host = key.split("://", 1)[-1].split("/", 1)[0]
        if host not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if user:
                return user, password
    return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ..., 'scope': ...}) from a WWW-Authenticate header."""
    import re

    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v1 if v1 or not v2 else v2
              for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest)}
    return scheme.lower(), params


def _reason(e: BaseException) -> str:
    """A short human reason for a network failure."""
    import socket
    import ssl
    import urllib.error

    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return f"timed out after {TIMEOUT:g}s"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host name ({e.strerror})"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# -- the HTTP client ---------------------------------------------------------------------------------------------


class _Client:
    """Talks to one repository of one registry; keeps the Authorization it earned."""

    def __init__(self, ref: Reference, timeout: float = TIMEOUT) -> None:
        self.ref = ref
        self.timeout = timeout
        scheme = "http" if is_local(ref.registry) else "https"
        self.base = f"{scheme}://{ref.registry}/v2/{ref.repository}"
        self.authorization: str | None = None
        self._openers: dict[bool, urllib.request.OpenerDirector] = {}

    def _opener(self, url: str) -> urllib.request.OpenerDirector:
        import urllib.parse
        import urllib.request

        local = (urllib.parse.urlsplit(url).hostname or "") in _LOCAL_HOSTS
        if local not in self._openers:
            # no proxy for loopback, whatever the environment says; the environment's proxies otherwise
            self._openers[local] = (urllib.request.build_opener(urllib.request.ProxyHandler({})) if local
                                    else urllib.request.build_opener())
        return self._openers[local]

    def _fail(self, what: str, why: str) -> RegistryError:
        return RegistryError(f"{what} for {self.ref} from registry {self.ref.registry}: {why}")

    def open(self, path: str, what: str, accept: str = "*/*") -> HTTPResponse:
        """GET base+path, answering one auth challenge; RegistryError on any failure."""
        import urllib.error
        import urllib.request

        url = self.base + path
        challenged = False
        while True:
            req = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "workbench/0.1"})
            if self.authorization:
                # not sent on to a redirect target (blob storage with signed URLs)
                req.add_unredirected_header("Authorization", self.authorization)
            try:
                resp: HTTPResponse = self._opener(url).open(req, timeout=self.timeout)
                return resp
            except urllib.error.HTTPError as e:
                body = _read_quietly(e)
                if e.code == 401 and not challenged:
                    challenged = True
                    self._authenticate(e.headers.get("WWW-Authenticate", ""))
                    continue
                raise self._http_error(e.code, e.reason, body, what, challenged) from None
            except (urllib.error.URLError, OSError) as e:
                raise RegistryError(
                    f"cannot reach registry {self.ref.registry} for {self.ref}: {_reason(e)}") from None

    def _http_error(self, code: int, reason: str, body: bytes, what: str, authed: bool) -> RegistryError:
        detail = ""
        try:
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{x.get('message') or x.get('code')} ({x.get('code')})" for x in errors)
        except (ValueError, AttributeError):
            pass
        why = f"{code} {reason}" + (f": {detail}" if detail else "")
        if code == 401:
            creds = "with the credentials from docker's config.json" if docker_credentials(self.ref.registry) \
                else "anonymously (no credentials for it in docker's config.json)"
            why += f" — pull access denied {creds}; the repository may not exist or may need authorization"
        return self._fail(what, why)

    def _authenticate(self, header: str) -> None:
        """Earn an Authorization header from a 401 challenge (Bearer token or Basic credentials)."""
        import base64
        import urllib.error
        import urllib.parse
        import urllib.request

        scheme, params = _parse_challenge(header)
        creds = docker_credentials(self.ref.registry)
        basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
        if scheme == "basic":
            if basic is None:
                raise self._fail("authenticating", "the registry asks for a user name and password, and docker's "
                                                   "config.json has none for it")
            self.authorization = basic
            return
        if scheme != "bearer" or not params.get("realm"):
            raise self._fail("authenticating", f"unsupported auth challenge {header!r}")
        realm = params["realm"]
        query = {"scope": f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, headers={"User-Agent": "workbench/0.1"})
        if basic:
            req.add_unredirected_header("Authorization", basic)
        try:
            with self._opener(url).open(req, timeout=self.timeout) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise self._fail("authenticating", f"token endpoint {realm} answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise self._fail("authenticating", f"cannot reach token endpoint {realm}: {_reason(e)}") from None
        except ValueError:
            raise self._fail("authenticating", f"token endpoint {realm} did not answer JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not token:
            raise self._fail("authenticating", f"token endpoint {realm} gave no token")
        self.authorization = f"Bearer {token}"


def _read_quietly(resp: Any) -> bytes:
    try:
        return bytes(resp.read(64 << 10))
    except (OSError, ValueError):
        return b""


# -- manifests ------------------------------------------------------------------------------------------------------


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


def _get_manifest(client: _Client, target: str, store: ContentStore | None) -> tuple[str, bytes, dict[str, Any]]:
    """Fetch (or, for a digest the store holds, read) and verify one manifest or index."""
    ref = client.ref
    by_digest = target.startswith("sha256:")
    if by_digest and store is not None and store.has(target):
        raw = store.read(target)
        return target, raw, _check_manifest(raw, target, "", str(ref))
    with client.open(f"/manifests/{target}", "pulling manifest", ACCEPT) as resp:
        try:
            raw = resp.read(MAX_MANIFEST + 1)
        except OSError as e:
            raise RegistryError(f"reading manifest for {ref} from {ref.registry}: {_reason(e)}") from None
        content_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        header_digest = resp.headers.get("Docker-Content-Digest") or ""
    if len(raw) > MAX_MANIFEST:
        raise RegistryError(f"manifest for {ref} from {ref.registry} is larger than {MAX_MANIFEST} bytes")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if by_digest and digest != target:
        raise RegistryError(f"manifest for {ref} from {ref.registry} failed verification: "
                            f"its content is {digest}, not {target}")
    if header_digest.startswith("sha256:") and header_digest != digest:
        raise RegistryError(f"manifest for {ref} from {ref.registry} failed verification: registry says "
                            f"{header_digest}, content is {digest}")
    if content_type in ("application/json", "text/plain", "application/octet-stream"):
        content_type = ""
    doc = _check_manifest(raw, digest, content_type, str(ref))
    if store is not None:
        store.write(raw, digest)
    return digest, raw, doc


def _resolve(client: _Client, platform: str, store: ContentStore | None) -> tuple[str, dict[str, Any], bytes]:
    ref = client.ref
    target = ref.digest or ref.tag or "latest"
    for _ in range(3):  # an index may point at an index (rare); never loop forever
        digest, raw, doc = _get_manifest(client, target, store)
        if doc["mediaType"] not in INDEX_TYPES:
            return digest, doc, raw
        target = str(select_platform(doc, platform, f"{ref} ({digest})")["digest"])
    raise RegistryError(f"{ref}: indexes nested too deeply")


def resolve(ref: Reference, platform: str = "linux/amd64") -> tuple[str, dict[str, Any], bytes]:
    """(manifest digest, manifest, raw manifest bytes) of `ref`'s image for `platform`, from the registry."""
    return _resolve(_Client(ref), platform, None)


# -- blobs ------------------------------------------------------------------------------------------------------


def _fetch_blob(client: _Client, desc: dict[str, Any], store: ContentStore, progress: Progress | None) -> None:
    """Download one blob into the store, verifying size and digest (skipped if present)."""
    ref, digest = client.ref, str(desc.get("digest", ""))
    if store.has(digest):
        return
    size = int(desc.get("size", -1))
    what = f"blob {digest} of {ref} from {ref.registry}"
    if progress:
        progress(digest, 0, max(size, 0))
    with client.open(f"/blobs/{digest}", f"pulling blob {digest}") as resp:
        try:
            with store.writer(digest) as w:
                while chunk := resp.read(CHUNK):
                    w.write(chunk)
                    if 0 <= size < w.size:
                        raise RegistryError(f"{what}: more than the {size} bytes its descriptor says")
                    if progress:
                        progress(digest, w.size, max(size, 0))
                if 0 <= size != w.size:
                    raise RegistryError(f"{what}: got {w.size} bytes, its descriptor says {size}")
        except DigestMismatch as e:
            raise RegistryError(f"{what} failed verification: {e}") from None
        except OSError as e:
            raise RegistryError(f"{what}: download failed: {_reason(e)}") from None


def pull(ref: Reference, store: ContentStore, platform: str = "linux/amd64",
         progress: Progress | None = None) -> PulledImage:
    """Resolve `ref` for `platform` and fetch its manifest, config and layers into `store`.

    progress(blob digest, bytes so far, total) is called while blobs download; present blobs are skipped.
    """
    if ref.digest is not None:
        try:
            store.path(ref.digest)
        except ValueError as e:
            raise RegistryError(f"{ref}: {e}") from None
    client = _Client(ref)
    digest, manifest, _raw = _resolve(client, platform, store)
    config_desc = manifest["config"]
    layers = [dict(layer) for layer in manifest.get("layers") or []]
    for desc in [config_desc, *layers]:
        try:
            store.path(str(desc.get("digest")))
        except ValueError as e:
            raise RegistryError(f"{ref}: manifest {digest}: {e}") from None
    _fetch_blob(client, config_desc, store, None)
    for layer in layers:
        _fetch_blob(client, layer, store, progress)
    config_digest = str(config_desc["digest"])
    try:
        config = json.loads(store.read(config_digest))
    except ValueError:
        raise RegistryError(f"{ref}: image config {config_digest} is not JSON") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{ref}: image config {config_digest} is not a JSON object")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise RegistryError(f"{ref}: image config lists {len(diff_ids)} layer diff_ids, "
                            f"the manifest {len(layers)} layers")
    return PulledImage(ref, digest, manifest, config, config_digest, layers)
