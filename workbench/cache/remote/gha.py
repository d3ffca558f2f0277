"""`type=gha`: the GitHub Actions cache service, v1 (`_apis/artifactcache/` REST) and v2 (Twirp `CacheService`
plus Azure block-blob transfers), as BuildKit's `cache/remotecache/gha` and go-actions-cache.

Blobs are entries keyed `buildkit-blob-1-<digest>`; the cache config is written under the next free
`index-<scope>-1-<hash of the token's writable scope>#<n>` and read, newest first, for every readable scope.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import struct
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from workbench.cache.remote import Progress, RemoteCacheError
from workbench.http.client import CHUNK, HttpClient, shared_client
from workbench.http.errors import HttpError
from workbench.http.retry import RetryPolicy

VERSION = hashlib.sha256(b"|go-actionscache-1.0").hexdigest()
RESULTS_HOST = "results-receiver.actions.githubusercontent.com"
USER_AGENT = "workbench go-actions-cache/1.0"
V1_ACCEPT = "application/json;api-version=6.0-preview.1"
V1_CHUNK = 32 << 20
AZURE_VERSION = "2024-11-04"
AZURE_BLOCK = 1 << 20  # BuildKit's UploadStream defaults: Put Blob below 1 MiB, else 1 MiB blocks
TWIRP = "twirp/github.actions.results.api.v1.CacheService/"
PERM_READ, PERM_WRITE = 1, 2


class AlreadyExists(RemoteCacheError):
    pass


# -- HTTP --------------------------------------------------------------------------------------------------------

THROTTLED = RetryPolicy(statuses=frozenset({429}), methods=None, retries=None, backoff=1.0, max_backoff=90.0)
"""A 429 is retried, for any method (nothing was done), until the request's deadline; no other answer is."""

def _http() -> HttpClient:
    # the cache service and its blob storage are spoken to directly: no proxies, no redirects
    return shared_client(timeout=None, retry=THROTTLED, proxies=False, redirects=0, user_agent=USER_AGENT)


class ServiceError(RemoteCacheError):
    """A request to the cache service or its blob storage failed; `status` is 0 when no answer came."""

    def __init__(self, message: str, status: int = 0, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def request(method: str, url: str, *, deadline: float, headers: dict[str, str] | None = None,
            body: bytes | None = None, out: BinaryIO | None = None,
            progress: Callable[[int], None] | None = None) -> Answer:
    """Send a request; a 429 is retried (Retry-After honoured, else backoff from 1 s doubling to 90 s) until
    `deadline` (time.monotonic()), which also bounds every attempt. With `out`, a 2xx body is streamed there
    (and not kept in the answer). Failures raise ServiceError: a non-2xx answer, no answer, a body cut short."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise RemoteCacheError(f"unsupported URL {url!r}")
    try:
        with _http().request(method, url, headers=headers, body=body, deadline=deadline) as resp:
            answer = Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, b"")
            if out is None:
                answer.body = resp.read()
                return answer
            for chunk in resp.chunks(CHUNK):
                out.write(chunk)
                if progress is not None:
                    progress(resp.received)
            return answer
    except HttpError as e:
        raise ServiceError(str(e), e.status, e.body) from None


@dataclass(frozen=True)
class Scope:
    scope: str
    permission: int


def parse_token(token: str) -> list[Scope]:
    """The cache scopes of an Actions runtime token (a JWT, read without verifying, as BuildKit does)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise RemoteCacheError("invalid token: not a JWT (want header.claims.signature)")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError) as e:
        raise RemoteCacheError(f"invalid token: unreadable claims: {e}") from None
    if not isinstance(claims, dict):
        raise RemoteCacheError("invalid token: claims are not an object")
    now = time.time()
    if isinstance(claims.get("exp"), int | float) and claims["exp"] < now:
        raise RemoteCacheError("invalid token: token is expired")
    if isinstance(claims.get("nbf"), int | float) and claims["nbf"] > now + 60:
        raise RemoteCacheError("invalid token: token is not valid yet")
    ac = claims.get("ac") or "[]"
    try:
        raw = json.loads(ac) if isinstance(ac, str) else ac
        # Go decodes field names case-insensitively
        return [Scope(str({k.lower(): v for k, v in s.items()}.get("scope", "")),
                      int({k.lower(): v for k, v in s.items()}.get("permission", 0))) for s in raw]
    except (ValueError, TypeError, AttributeError) as e:
        raise RemoteCacheError(f"invalid token: bad 'ac' claim: {e}") from None


def parse_duration(text: str) -> float:
    """A Go duration ("10m", "1m30s", "500ms") in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise RemoteCacheError(f"invalid timeout {text!r} (want a duration like 10m or 30s)")
    return sum(float(n) * units[u] for n, u in parts)


@dataclass
class GhaConfig:
    url: str
    version: int
    token: str
    scope: str = "buildkit"
    timeout: float = 600.0
    repository: str = ""
    ghtoken: str = ""
    scopes: list[Scope] = field(default_factory=list)

    @classmethod
    def from_attrs(cls, attrs: dict[str, str]) -> GhaConfig:
        """BuildKit's `getConfig`: `url_v2` wins (v2) unless version=1; `url` alone is v1 unless it is the
        results-receiver host."""
        ver = 0
        if "version" in attrs:
            try:
                ver = int(attrs["version"])
            except ValueError:
                raise RemoteCacheError(f"failed to parse version {attrs['version']!r}") from None
            if ver not in (1, 2):
                raise RemoteCacheError(f"unsupported cache service version {ver} (want 1 or 2)")
        url = ""
        if ver != 1 and attrs.get("url_v2"):
            url, ver = attrs["url_v2"], 2
        if not url and attrs.get("url"):
            url = attrs["url"]
        if not url:
            raise RemoteCacheError("url not set for github actions cache")
        if ver == 0:
            ver = 2 if RESULTS_HOST in url else 1
        token = attrs.get("token", "")
        if not token:
            raise RemoteCacheError("token not set for github actions cache")
        timeout = parse_duration(attrs["timeout"]) if attrs.get("timeout") else 600.0
        if not url.endswith("/"):
            url += "/"
        return cls(url, ver, token, attrs.get("scope") or "buildkit", timeout, attrs.get("repository", ""),
                   attrs.get("ghtoken", ""), parse_token(token))


@dataclass
class Entry:
    key: str
    url: str


class _Service:
    """What v1 and v2 have in common: prefix lookup, save, download; and SaveMutable on top."""

    def __init__(self, cfg: GhaConfig) -> None:
        self.cfg = cfg

    def deadline(self) -> float:
        return time.monotonic() + self.cfg.timeout

    def load(self, key: str) -> Entry | None:
        raise NotImplementedError

    def save(self, key: str, path: Path, size: int, progress: Progress) -> None:
        raise NotImplementedError

    def download(self, entry: Entry, out: BinaryIO, progress: Progress) -> None:
        raise NotImplementedError

    def save_mutable(self, key: str, path: Path, size: int) -> None:
        """Write `key#<n+1>` where `key#<n>` is the newest entry (go-actions-cache `SaveMutable`)."""
        latest = self.load(key + "#")
        idx = 0
        if latest is not None:
            try:
                idx = int(latest.key[len(key) + 1:])
            except ValueError:
                raise RemoteCacheError(f"corrupt index key {latest.key!r}") from None
        for _ in range(64):
            idx += 1
            try:
                self.save(f"{key}#{idx}", path, size, lambda c, t: None)
                return
            except AlreadyExists:
                continue
        raise RemoteCacheError(f"no free index entry after {key}#{idx}")


class V1(_Service):
    def _api(self, path: str) -> str:
        return self.cfg.url + "_apis/artifactcache/" + path

    def _headers(self, content_type: str = "") -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.cfg.token}", "Accept": V1_ACCEPT, "User-Agent": USER_AGENT}
        if content_type:
            h["Content-Type"] = content_type
        return h

    @staticmethod
    def _exists(e: ServiceError) -> bool:
        try:
            doc = json.loads(e.body or b"{}")
        except ValueError:
            doc = {}
        return (e.status == 409 or "AlreadyExists" in str(doc.get("typeKey", ""))
                or "already exists" in str(doc.get("message", "")))

    def load(self, key: str) -> Entry | None:
        q = urllib.parse.urlencode({"keys": key, "version": VERSION})
        resp = request("GET", self._api("cache?" + q), headers=self._headers(), deadline=self.deadline())
        if resp.status == 204 or not resp.body.strip():
            return None
        doc = json.loads(resp.body)
        if not doc.get("cacheKey"):
            return None
        return Entry(doc["cacheKey"], doc.get("archiveLocation", ""))

    def save(self, key: str, path: Path, size: int, progress: Progress) -> None:
        body = json.dumps({"key": key, "version": VERSION, "cacheSize": size}).encode()
        try:
            resp = request("POST", self._api("caches"), headers=self._headers("application/json"), body=body,
                           deadline=self.deadline())
        except ServiceError as e:
            if self._exists(e):
                raise AlreadyExists(f"cache entry {key} already exists") from None
            raise
        doc = json.loads(resp.body or b"{}")
        cache_id = doc.get("cacheId") or doc.get("cacheID") or 0
        if not cache_id:
            raise RemoteCacheError(f"invalid response from reserving {key}: {resp.body[:200]!r}")
        with open(path, "rb") as f:
            start = 0
            while chunk := f.read(V1_CHUNK):
                headers = self._headers("application/octet-stream")
                headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/*"
                request("PATCH", self._api(f"caches/{cache_id}"), headers=headers, body=chunk,
                        deadline=self.deadline())
                start += len(chunk)
                progress(start, size)
        request("POST", self._api(f"caches/{cache_id}"), headers=self._headers("application/json"),
                body=json.dumps({"size": size}).encode(), deadline=self.deadline())

    def download(self, entry: Entry, out: BinaryIO, progress: Progress) -> None:
        if not entry.url:
            raise RemoteCacheError(f"cache entry {entry.key} has no archive location")
        request("GET", entry.url, headers={"User-Agent": USER_AGENT}, out=out, deadline=self.deadline(),
                progress=lambda n: progress(n, 0))


class V2(_Service):
    def _call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.cfg.token}", "Content-Type": "application/json",
                   "User-Agent": USER_AGENT}
        try:
            resp = request("POST", self.cfg.url + TWIRP + method, headers=headers,
                           body=json.dumps(payload).encode(), deadline=self.deadline())
        except ServiceError as e:
            try:
                doc = json.loads(e.body or b"{}")
            except ValueError:
                doc = {}
            if doc.get("code") == "already_exists":
                raise AlreadyExists(f"{method}: already exists") from None
            msg = doc.get("msg") or doc.get("message")
            if msg:
                raise RemoteCacheError(f"{method}: {e.status} {doc.get('code', '')}: {msg}") from None
            raise
        try:
            doc = json.loads(resp.body or b"{}")
        except ValueError:
            raise RemoteCacheError(f"{method}: answer is not JSON: {resp.body[:200]!r}") from None
        return doc if isinstance(doc, dict) else {}

    def load(self, key: str) -> Entry | None:
        doc = self._call("GetCacheEntryDownloadURL", {"key": key, "restore_keys": [key], "version": VERSION})
        if not doc.get("ok"):
            return None
        return Entry(doc.get("matched_key") or key, doc.get("signed_download_url", ""))

    def save(self, key: str, path: Path, size: int, progress: Progress) -> None:
        doc = self._call("CreateCacheEntry", {"key": key, "version": VERSION})
        if not doc.get("ok"):
            raise RemoteCacheError(f"failed to reserve cache {key}")
        _azure_upload(doc.get("signed_upload_url", ""), path, size, progress, self.deadline)
        doc = self._call("FinalizeCacheEntryUpload", {"key": key, "size_bytes": size, "version": VERSION})
        if not doc.get("ok"):
            raise RemoteCacheError(f"failed to finalize cache entry {key}")

    def download(self, entry: Entry, out: BinaryIO, progress: Progress) -> None:
        start = out.tell()
        for attempt in range(2):
            try:
                request("GET", entry.url, headers={"x-ms-version": AZURE_VERSION, "User-Agent": USER_AGENT},
                        out=out, deadline=self.deadline(), progress=lambda n: progress(n, 0))
                return
            except ServiceError as e:
                if e.status not in (401, 403) or attempt:
                    raise
            # an expired signed URL: ask for a fresh one once (BuildKit v0.23.2)
            fresh = self.load(entry.key)
            if fresh is None:
                raise RemoteCacheError(f"cache entry {entry.key} disappeared")
            entry = fresh
            out.seek(start)
            out.truncate()


def _azure_upload(url: str, path: Path, size: int, progress: Progress, deadline: Any) -> None:
    """Put Blob below one block, else Put Block for each block and Put Block List (azblob UploadStream)."""
    if not url:
        raise RemoteCacheError("the cache service gave no upload URL")
    base = {"x-ms-version": AZURE_VERSION, "User-Agent": USER_AGENT}
    sep = "&" if "?" in url else "?"
    with open(path, "rb") as f:
        if size < AZURE_BLOCK:
            data = f.read()
            request("PUT", url, headers={**base, "x-ms-blob-type": "BlockBlob",
                                         "Content-Type": "application/octet-stream"}, body=data,
                    deadline=deadline())
            progress(size, size)
            return
        prefix = secrets.token_bytes(16)
        ids: list[str] = []
        done = 0
        while chunk := f.read(AZURE_BLOCK):
            block_id = base64.b64encode(prefix + struct.pack(">I", len(ids)) + bytes(44)).decode()
            request("PUT", f"{url}{sep}comp=block&blockid={urllib.parse.quote(block_id, safe='')}",
                    headers=dict(base), body=chunk, deadline=deadline())
            ids.append(block_id)
            done += len(chunk)
            progress(done, size)
    xml = '<?xml version="1.0" encoding="utf-8"?><BlockList>' + "".join(
        f"<Latest>{i}</Latest>" for i in ids) + "</BlockList>"
    request("PUT", f"{url}{sep}comp=blocklist", headers={**base, "Content-Type": "application/xml"},
            body=xml.encode(), deadline=deadline())


def blob_key(digest: str) -> str:
    return f"buildkit-blob-1-{digest}"


class GhaBackend:
    """The cache in GitHub Actions' cache service (or `workbench gha-server`)."""

    def __init__(self, cfg: GhaConfig) -> None:
        self.cfg = cfg
        self.service: _Service = V2(cfg) if cfg.version == 2 else V1(cfg)
        self._listed: set[str] | None = None

    @classmethod
    def from_attrs(cls, attrs: dict[str, str]) -> GhaBackend:
        return cls(GhaConfig.from_attrs(attrs))

    def describe(self) -> str:
        return f"gha:{self.cfg.scope} (cache service v{self.cfg.version})"

    def _index_key(self, token_scope: str) -> str:
        return f"index-{self.cfg.scope}-1-{hashlib.sha256(token_scope.encode()).hexdigest()[:8]}"

    def _write_scope(self) -> str:
        scope = ""
        for s in self.cfg.scopes:
            if s.permission & PERM_WRITE:
                scope = s.scope
        return scope

    def has_blob(self, digest: str) -> bool:
        if self.cfg.repository and self.cfg.ghtoken:
            if self._listed is None:
                self._listed = self._list_keys("buildkit-blob-1-")
            return blob_key(digest) in self._listed
        return self.service.load(blob_key(digest)) is not None

    def _list_keys(self, prefix: str) -> set[str]:
        """Existing keys through GitHub's REST API ($GITHUB_API_URL, else api.github.com)."""
        import os

        api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
        keys: set[str] = set()
        page = 1
        while True:
            q = urllib.parse.urlencode({"per_page": 100, "page": page, "key": prefix})
            resp = request("GET", f"{api}/repos/{self.cfg.repository}/actions/caches?{q}",
                           headers={"Accept": "application/vnd.github+json", "User-Agent": USER_AGENT,
                                    "Authorization": f"Bearer {self.cfg.ghtoken}",
                                    "X-GitHub-Api-Version": "2022-11-28"},
                           deadline=self.service.deadline())
            doc = json.loads(resp.body)
            keys.update(c["key"] for c in doc.get("actions_caches") or [])
            if int(doc.get("total_count", 0)) <= page * 100:
                return keys
            page += 1

    def put_blob(self, digest: str, path: Path, size: int, progress: Progress) -> None:
        """Upload a blob, unless the service has it already. A key that exists but is not committed (another
        upload is on it, or was until its build was killed) is waited for: until it is committed, or until
        the service lets us reserve it again (it takes over a stale reservation) and we upload it ourselves;
        never past the timeout, and never reported done before the entry is really there."""
        key = blob_key(digest)
        deadline = self.service.deadline()
        wait = 0.5
        while True:
            try:
                self.service.save(key, path, size, progress)
                return
            except AlreadyExists:
                if self.service.load(key) is not None:
                    progress(size, size)
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                raise RemoteCacheError(f"cache entry {key} is reserved by another upload that was not committed "
                                       f"within the {self.cfg.timeout:g}s timeout (a build killed while uploading "
                                       "it? the service lets a reservation be taken over once it has gone stale)")
            time.sleep(min(wait, left))
            wait = min(wait * 2, 5.0)

    def get_blob(self, digest: str, out: BinaryIO, progress: Progress) -> None:
        entry = self.service.load(blob_key(digest))
        if entry is None:
            raise RemoteCacheError(f"blob {digest} is not in the cache")
        self.service.download(entry, out, progress)

    def read_configs(self) -> list[bytes]:
        import io

        scopes = [s.scope for s in self.cfg.scopes if s.permission & PERM_READ] or [""]
        configs = []
        for scope in dict.fromkeys(scopes):
            entry = self.service.load(self._index_key(scope) + "#")
            if entry is None:
                continue
            buf = io.BytesIO()
            self.service.download(entry, buf, lambda c, t: None)
            configs.append(buf.getvalue())
        return configs

    def write_config(self, config: bytes, layers: list[dict[str, object]]) -> None:
        import tempfile

        with tempfile.NamedTemporaryFile() as f:
            f.write(config)
            f.flush()
            self.service.save_mutable(self._index_key(self._write_scope()), Path(f.name), len(config))
