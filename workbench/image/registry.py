"""Pull and push images from / to an OCI distribution (v2) registry.

Plain HTTP for localhost / 127.0.0.1 / ::1 (any port), for hosts listed in $WORKBENCH_INSECURE_REGISTRIES
(comma-separated "host[:port]") and for those with `http = true` in the config file's `[registry."HOST"]`
table (buildkitd.toml's; `insecure = true` there keeps HTTPS but skips certificate checks), HTTPS elsewhere.
The config file is $WORKBENCH_CONFIG, else /etc/workbench/workbench.toml if present. Auth: on a 401 challenge, a Bearer
token from the realm (anonymous, or with basic credentials from ~/.docker/config.json "auths"), or Basic with
those credentials. Manifests: OCI and docker schema 2, and their indexes / manifest lists (the platform is
picked). Every manifest and blob is verified against its digest; blobs already in the content store are not
fetched again, and a pull by digest whose blobs are all present does not touch the network. Layers download
in parallel. Pushing (`push_image`, and the blob / manifest functions under it, which the registry cache
reuses) skips blobs the registry has, mounts blobs from another repository of the same registry that they
were pulled from or pushed to, and uploads the rest monolithically or in chunks.

Requests go through `workbench.http` (urllib3, imported on first use, so importing this module stays cheap);
the auth challenges are answered here, through its auth hook.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.http.client import HttpClient, Response, StaticAuth, resumable
from workbench.http.errors import BrokenDownload, HttpError
from workbench.image.content import ContentStore, DigestMismatch
from workbench.image.reference import Reference

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

INSECURE_ENV = "WORKBENCH_INSECURE_REGISTRIES"
PARALLEL_PULLS = 4
RESUME_ATTEMPTS = 3
CHUNKED_THRESHOLD = 64 << 20  # blobs larger than this are uploaded in chunks of CHUNK_UPLOAD bytes
CHUNK_UPLOAD = 16 << 20

Progress = Callable[[str, int, int], None]


class RegistryError(Exception):
    """A pull or push failed; the message names the registry or reference and what went wrong."""


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


def insecure_registries() -> set[str]:
    """The hosts ("host" or "host:port") configured for plain HTTP in $WORKBENCH_INSECURE_REGISTRIES."""
    return {h.strip().split("://", 1)[-1].rstrip("/") for h in os.environ.get(INSECURE_ENV, "").split(",")
            if h.strip()}


def registry_config(registry: str) -> dict[str, Any]:
    """The config file's `[registry."HOST[:PORT]"]` table for `registry` (the host:port entry, else the host's)."""
    import tomllib

    path = Path(os.environ.get("WORKBENCH_CONFIG") or "/etc/workbench/workbench.toml")
    try:
        with open(path, "rb") as f:
            tables = tomllib.load(f).get("registry") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    entry = tables.get(registry) if isinstance(tables, dict) else None
    if entry is None and isinstance(tables, dict):
        entry = tables.get(_host(registry))
    return entry if isinstance(entry, dict) else {}


def uses_http(registry: str) -> bool:
    """Plain HTTP for loopback and for hosts configured insecure, HTTPS otherwise."""
    insecure = insecure_registries()
    return (is_local(registry) or registry in insecure or _host(registry) in insecure
            or registry_config(registry).get("http") is True)


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
    """A short human reason for a network failure (an HttpError's cause)."""
    import socket
    import ssl

    if isinstance(e, HttpError):
        if e.cause is None:
            return e.reason
        e = e.cause
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return f"timed out after {TIMEOUT:g}s"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host name ({e.strerror})"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e}"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# -- the HTTP client ---------------------------------------------------------------------------------------------


_HTTP: dict[bool, HttpClient] = {}
_HTTP_LOCK = threading.Lock()


def _http(verify: bool) -> HttpClient:
    """The HTTP client all registry requests share (one with certificate checks, one without)."""
    with _HTTP_LOCK:
        if verify not in _HTTP:
            # no proxy for loopback, whatever the environment says; the environment's proxies otherwise
            _HTTP[verify] = HttpClient(timeout=TIMEOUT, direct=_LOCAL_HOSTS, verify=verify,
                                       user_agent="workbench/0.1", maxsize=2 * PARALLEL_PULLS)
        return _HTTP[verify]


class _Client:
    """Talks to one repository of one registry; keeps the Authorization it earned (the HTTP layer's auth hook)."""

    def __init__(self, ref: Reference, timeout: float = TIMEOUT, push: bool = False,
                 extra_pull: tuple[str, ...] = ()) -> None:
        self.ref = ref
        self.timeout = timeout
        scheme = "http" if uses_http(ref.registry) else "https"
        self.origin = f"{scheme}://{ref.registry}"
        self.base = f"{self.origin}/v2/{ref.repository}"
        self.authorization: str | None = None
        self.push = push
        self.extra_pull = extra_pull  # other repositories blobs may be mounted from (token scopes)
        self.http = _http(registry_config(ref.registry).get("insecure") is not True)
        self._lock = threading.Lock()

    def _fail(self, what: str, why: str) -> RegistryError:
        return RegistryError(f"{what} for {self.ref} from registry {self.ref.registry}: {why}")

    def open(self, path: str, what: str, accept: str = "*/*") -> Response:
        """GET base+path, answering one auth challenge; RegistryError on any failure."""
        return self.request("GET", path, what, headers={"Accept": accept})

    def url(self, location: str) -> str:
        """An absolute URL for a path under the repository ("/blobs/..."), or a Location header's value."""
        if location.startswith(("http://", "https://")):
            return location
        if location.startswith("/v2/"):
            return self.origin + location
        return self.base + location

    def request(self, method: str, path: str, what: str, data: Any = None,
                headers: dict[str, str] | None = None, not_found_ok: bool = False) -> Response:
        """`method` base+path (or an absolute URL / Location), answering one auth challenge.

        `data` (bytes, or a file object with Content-Length in `headers`) cannot be sent twice: requests with a
        streamed body are made after an earlier request earned the Authorization. RegistryError on failures;
        with `not_found_ok` a 404 returns its response.
        """
        try:
            return self.http.request(method, self.url(path), headers=headers, body=data, auth=self,
                                     ok=(404,) if not_found_ok else ())
        except HttpError as e:
            if e.status:
                raise self._http_error(e.status, e.reason, e.body, what, e.challenged) from None
            raise RegistryError(
                f"cannot reach registry {self.ref.registry} for {self.ref}: {_reason(e)}") from None

    # the auth hook: the Authorization goes to the registry only, not on to a redirect target (blob storage
    # with signed URLs)

    def authorize(self, url: str) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}

    def challenge(self, error: HttpError, sent: Mapping[str, str]) -> bool:
        with self._lock:
            if self.authorization == sent.get("Authorization"):  # else a thread renewed it
                self._authenticate(error.headers.get("www-authenticate", ""))
        return True

    def _http_error(self, code: int, reason: str, body: bytes, what: str, authed: bool) -> RegistryError:
        detail = ""
        try:
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{x.get('message') or x.get('code')} ({x.get('code')})" for x in errors)
        except (ValueError, AttributeError):
            pass
        why = f"{code} {reason}" + (f": {detail}" if detail else "")
        if code == 401 and authed and (self.authorization or "").startswith("Basic "):
            creds_ = docker_credentials(self.ref.registry)
            return self._fail(what, f"{why} — the registry refused the credentials of user "
                                    f"{creds_[0] if creds_ else ''!r} from docker's config.json (wrong user name "
                                    "or password?)")
        if code in (401, 403):
            creds = "with the credentials from docker's config.json" if docker_credentials(self.ref.registry) \
                else "anonymously (no credentials for it in docker's config.json)"
            action = "push" if self.push else "pull"
            why += f" — {action} access denied {creds}; the repository may not exist or may need authorization"
        return self._fail(what, why)

    def _authenticate(self, header: str) -> None:
        """Earn an Authorization header from a 401 challenge (Bearer token or Basic credentials)."""
        import base64
        import urllib.parse

        scheme, params = _parse_challenge(header)
        creds = docker_credentials(self.ref.registry)
        basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
        if scheme == "basic":
            if basic is None:
                raise self._fail("authenticating", "the registry asks for a user name and password, and docker's "
                                                   "config.json has none for it")
            if self.authorization == basic:
                user = creds[0] if creds else ""
                raise self._fail("authenticating", "the registry refused the user name and password from "
                                                   f"docker's config.json (user {user!r}) — wrong credentials?")
            self.authorization = basic
            return
        if scheme != "bearer" or not params.get("realm"):
            raise self._fail("authenticating", f"unsupported auth challenge {header!r}")
        realm = params["realm"]
        scopes = [f"repository:{self.ref.repository}:{'pull,push' if self.push else 'pull'}"]
        scopes += [f"repository:{repo}:pull" for repo in self.extra_pull if repo != self.ref.repository]
        query: list[tuple[str, str]] = [("scope", sc) for sc in scopes]
        if params.get("service"):
            query.append(("service", params["service"]))
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        try:
            with self.http.request("GET", url, auth=StaticAuth({"Authorization": basic} if basic else {})) as resp:
                doc = json.loads(resp.read())
        except HttpError as e:
            if not e.status:
                raise self._fail("authenticating", f"cannot reach token endpoint {realm}: {_reason(e)}") from None
            hint = " — wrong credentials in docker's config.json?" if e.status in (401, 403) and basic else ""
            raise self._fail("authenticating", f"token endpoint {realm} answered {e.status} {e.reason}{hint}") from None
        except ValueError:
            raise self._fail("authenticating", f"token endpoint {realm} did not answer JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not token:
            raise self._fail("authenticating", f"token endpoint {realm} gave no token")
        self.authorization = f"Bearer {token}"


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
        except HttpError as e:
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
    """Download one blob into the store, verifying size and digest (skipped if present).

    A download cut short (connection reset, early end) resumes where it stopped with a Range request, up to
    RESUME_ATTEMPTS times, when the registry answers ranges (206); the digest covers the joined bytes.
    """
    ref, digest = client.ref, str(desc.get("digest", ""))
    if store.has(digest):
        return
    size = int(desc.get("size", -1))
    what = f"blob {digest} of {ref} from registry {ref.registry}"
    path, doing = f"/blobs/{digest}", f"pulling blob {digest}"
    if progress:
        progress(digest, 0, max(size, 0))

    def reopen(offset: int) -> Response:
        return client.request("GET", path, doing, headers={"Range": f"bytes={offset}-"})

    body = resumable(client.open(path, doing), reopen, size=size, attempts=RESUME_ATTEMPTS, chunk=CHUNK)
    try:
        with store.writer(digest) as w:
            for chunk in body:
                w.write(chunk)
                if 0 <= size < w.size:
                    raise RegistryError(f"{what}: more than the {size} bytes its descriptor says")
                if progress:
                    progress(digest, w.size, max(size, 0))
            if 0 <= size != w.size:
                raise RegistryError(f"{what}: got {w.size} bytes, its descriptor says {size}")
    except BrokenDownload as e:
        if e.unresumable:
            raise RegistryError(f"{what}: download broke off ({_reason(e)}) and the registry "
                                "cannot resume it (no range support)") from None
        raise RegistryError(f"{what}: download failed after {e.resumptions} resumptions: {_reason(e)}") from None
    except DigestMismatch as e:
        raise RegistryError(f"{what} failed verification (digest mismatch): {e}; nothing was stored") from None
    except OSError as e:
        raise RegistryError(f"{what}: download failed: {_reason(e)}") from None
    finally:
        body.close()


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
    missing = [layer for layer in layers if not store.has(str(layer["digest"]))]
    if len(missing) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(PARALLEL_PULLS, len(missing)), thread_name_prefix="pull") as pool:
            for future in [pool.submit(_fetch_blob, client, layer, store, progress) for layer in missing]:
                future.result()  # the first failure, in layer order
    else:
        for layer in missing:
            _fetch_blob(client, layer, store, progress)
    record_source(store, [str(d["digest"]) for d in missing], ref)
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


# -- distribution sources (for cross-repository mounts) --------------------------------------------------------


def _sources_dir(store: ContentStore) -> Path:
    return store.root / "sources"


def record_source(store: ContentStore, digests: list[str], ref: Reference) -> None:
    """Remember that the blobs `digests` are in `ref`'s repository (so a push to another repository of the same
    registry can mount them instead of uploading)."""
    line = f"{ref.registry}/{ref.repository}\n"
    d = _sources_dir(store)
    d.mkdir(mode=0o700, exist_ok=True)
    for digest in digests:
        path = d / digest.split(":", 1)[1]
        try:
            if line in path.read_text().splitlines(keepends=True):
                continue
        except OSError:
            pass
        # one short append: atomic enough between processes
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600), "a") as f:
            f.write(line)


def blob_sources(store: ContentStore, digest: str, registry: str) -> list[str]:
    """Repositories of `registry` known to hold the blob `digest`."""
    try:
        lines = (_sources_dir(store) / digest.split(":", 1)[1]).read_text().splitlines()
    except OSError:
        return []
    return [line.split("/", 1)[1] for line in lines if line.startswith(registry + "/") and "/" in line]


# -- push ---------------------------------------------------------------------------------------------------------


def push_client(ref: Reference, mount_from: tuple[str, ...] = ()) -> _Client:
    """A client for pushing to `ref`'s repository; `mount_from` names repositories of the same registry whose
    blobs may be mounted (they go into the token scope). Reuse one client for a whole push."""
    return _Client(ref, push=True, extra_pull=mount_from)


def blob_exists(client: _Client, digest: str) -> bool:
    """Whether the registry has the blob `digest` in the client's repository (HEAD)."""
    with client.request("HEAD", f"/blobs/{digest}", f"checking blob {digest}", not_found_ok=True) as resp:
        return bool(resp.status == 200)


def _location(client: _Client, resp: Any, what: str) -> str:
    location = resp.headers.get("Location")
    if not location:
        raise client._fail(what, "the registry gave no upload Location")
    return client.url(location)


def _with_query(url: str, **params: str) -> str:
    import urllib.parse

    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def upload_blob(client: _Client, digest: str, size: int, path: Path, mount_from: tuple[str, ...] = (),
                chunk_size: int | None = None, progress: Progress | None = None) -> str:
    """Make the blob `digest` (the file `path`, `size` bytes) exist in the client's repository.

    Returns "exists" (already there), "mounted" (cross-repository mount from one of `mount_from`) or
    "uploaded". Uploads are monolithic (one PUT), or chunked (PATCHes of `chunk_size` bytes, then a PUT) when
    `chunk_size` is given or the blob is larger than CHUNKED_THRESHOLD.
    """
    what = f"pushing blob {digest}"
    if blob_exists(client, digest):
        if progress:
            progress(digest, size, size)
        return "exists"
    location = None
    for repo in mount_from:
        if repo == client.ref.repository:
            continue
        with client.request("POST", f"/blobs/uploads/?mount={digest}&from={repo}", what, data=b"") as resp:
            if resp.status == 201:
                if progress:
                    progress(digest, size, size)
                return "mounted"
            location = _location(client, resp, what)  # 202: the mount was refused, an upload began instead
            break
    if location is None:
        with client.request("POST", "/blobs/uploads/", what, data=b"") as resp:
            location = _location(client, resp, what)
    if chunk_size is None and size > CHUNKED_THRESHOLD:
        chunk_size = CHUNK_UPLOAD
    octets = {"Content-Type": "application/octet-stream"}
    if progress:
        progress(digest, 0, size)
    with open(path, "rb") as f:
        if chunk_size is None:
            with client.request("PUT", _with_query(location, digest=digest), what, data=f,
                                headers={**octets, "Content-Length": str(size)}):
                pass
        else:
            offset = 0
            while offset < size:
                n = min(chunk_size, size - offset)
                chunk = f.read(n)
                with client.request("PATCH", location, what, data=chunk,
                                    headers={**octets, "Content-Length": str(n),
                                             "Content-Range": f"{offset}-{offset + n - 1}"}) as resp:
                    location = _location(client, resp, what)
                offset += n
                if progress:
                    progress(digest, offset, size)
            with client.request("PUT", _with_query(location, digest=digest), what, data=b"",
                                headers={**octets, "Content-Length": "0"}):
                pass
    if progress:
        progress(digest, size, size)
    return "uploaded"


def put_manifest(client: _Client, reference: str, raw: bytes, media_type: str) -> str:
    """PUT a manifest or index under a tag (or its digest); returns its digest, checked against the registry's."""
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    with client.request("PUT", f"/manifests/{reference}", f"pushing manifest {digest}", data=raw,
                        headers={"Content-Type": media_type}) as resp:
        said = resp.headers.get("Docker-Content-Digest") or ""
    if said.startswith("sha256:") and said != digest:
        raise client._fail("pushing manifest", f"the registry stored it as {said}, its content is {digest}")
    return digest


def _media_type(raw: bytes) -> str:
    doc = json.loads(raw)
    return str(doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST))


def push_image(ref: Reference, store: ContentStore, manifest_digest: str, progress: Progress | None = None,
               chunk_size: int | None = None) -> str:
    """Push the image (or index) `manifest_digest` from `store` to `ref` (its tag, or by digest): blobs first
    (mounted where known, in parallel), then the manifests. Returns the pushed manifest digest."""
    raw = store.read(manifest_digest)
    manifests: list[tuple[str, bytes]] = []  # children before their index
    blobs: dict[str, int] = {}

    def walk(digest: str, data: bytes) -> None:
        doc = json.loads(data)
        if "manifests" in doc:
            for child in doc.get("manifests") or []:
                if store.has(child["digest"]):
                    walk(child["digest"], store.read(child["digest"]))
        else:
            for desc in [doc["config"], *(doc.get("layers") or [])]:
                blobs[str(desc["digest"])] = int(desc.get("size", 0))
        manifests.append((digest, data))

    walk(manifest_digest, raw)
    for digest in blobs:
        if not store.has(digest):
            raise RegistryError(f"pushing {ref}: blob {digest} of image {manifest_digest} is not in the content store")
    sources = {d: blob_sources(store, d, ref.registry) for d in blobs}
    mountable = tuple(sorted({r for repos in sources.values() for r in repos} - {ref.repository}))
    client = push_client(ref, mountable)
    with client.request("HEAD", f"/blobs/{manifest_digest}", f"authenticating to push {manifest_digest}",
                        not_found_ok=True):
        pass  # earns the token before any body is streamed

    def one(digest: str) -> None:
        upload_blob(client, digest, blobs[digest], store.path(digest),
                    tuple(r for r in sources[digest] if r != ref.repository), chunk_size, progress)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(PARALLEL_PULLS, thread_name_prefix="push") as pool:
        for future in [pool.submit(one, d) for d in blobs]:
            future.result()
    for digest, data in manifests[:-1]:
        put_manifest(client, digest, data, _media_type(data))
    pushed = put_manifest(client, ref.digest or ref.tag or manifest_digest, raw, _media_type(raw))
    record_source(store, list(blobs), ref)
    return pushed


# -- the public surface for other users of the registry (the registry cache) ------------------------------------

RegistryClient = _Client


def pull_client(ref: Reference) -> _Client:
    """A client for reading `ref`'s repository (pull scope); reuse it for every request of one operation."""
    return _Client(ref)


def fetch_manifest(client: _Client, reference: str, store: ContentStore | None = None
                   ) -> tuple[str, bytes, dict[str, Any]]:
    """(digest, raw bytes, document) of the manifest or index `reference` (a tag or digest), verified, and
    written to `store` if given."""
    return _get_manifest(client, reference, store)


def fetch_blob(client: _Client, digest: str, size: int, store: ContentStore, progress: Progress | None = None) -> None:
    """Download the blob `digest` (`size` bytes, -1 if unknown) into `store`, verified, resumed if cut short."""
    _fetch_blob(client, {"digest": digest, "size": size}, store, progress)
