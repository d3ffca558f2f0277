"""The emulator: GitHub Actions cache service v1 (`_apis/artifactcache/`), v2 (Twirp `CacheService`), an
Azure-like blob endpoint for signed URLs, and the REST cache list; with faults to inject for tests.

Entries live in memory, blob bytes in files under the data dir. Keys are matched as GitHub does: an exact
key first, then the newest entry whose key starts with a restore key, within the token's readable scopes
(its writable scope first) and only with the same version. New entries go to the token's writable scope.

With `--azurite URL` the signed URLs point at a real azurite blob service (the emulator signs Azure SAS
for it) instead of this server's own endpoint; the blob faults then do not apply.

Faults (`--fault`, or `POST /_wb/faults` with the token):
  throttle=N                        the next N API calls answer 429 with `Retry-After: 1`
  fail-writes                       reserve/create/upload calls answer 500
  truncate-downloads[=KEY-PREFIX]   blobs (of entries whose key starts with the prefix) are served half
  expire-urls                       the first download URL of each entry has already expired
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from workbench.gha import token as tokens
from workbench.gha.azurite import Azurite

AZURE_VERSION = "2024-11-04"
ACCOUNT, CONTAINER = "devstoreaccount1", "actions-cache"
TWIRP_PREFIX = "/twirp/github.actions.results.api.v1.CacheService/"
URL_TTL = 3600.0


@dataclass
class Entry:
    id: int
    key: str
    version: str
    scope: str
    blob: str
    created: float
    size: int = -1
    committed: bool = False
    accessed: float = 0.0


@dataclass
class Faults:
    throttle: int = 0
    fail_writes: bool = False
    truncate_downloads: str = ""
    """Entries whose key starts with this are served half ("" off, "*" all)."""
    expire_urls: bool = False

    def update(self, spec: dict[str, Any]) -> None:
        for k, v in spec.items():
            name = k.replace("-", "_")
            if name == "throttle":
                self.throttle = int(v)
            elif name == "truncate_downloads":
                self.truncate_downloads = "*" if v is True else str(v or "")
            elif name in ("fail_writes", "expire_urls"):
                setattr(self, name, bool(v))
            else:
                raise ValueError(f"unknown fault {k!r} (throttle, fail-writes, truncate-downloads, expire-urls)")


def parse_fault(text: str) -> dict[str, Any]:
    """`throttle=3`, `fail-writes`, `truncate-downloads`, `expire-urls` → a Faults.update() dict."""
    name, eq, value = text.partition("=")
    if name == "throttle":
        if not eq or not value.isdigit():
            raise ValueError(f"--fault {text!r}: want throttle=N")
        return {"throttle": int(value)}
    if name == "truncate-downloads":
        return {name: value if eq else "*"}
    if name in ("fail-writes", "expire-urls") and not eq:
        return {name: True}
    raise ValueError(f"--fault {text!r}: unknown fault "
                     "(throttle=N, fail-writes, truncate-downloads[=KEY-PREFIX], expire-urls)")


@dataclass
class State:
    data: Path
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    entries: list[Entry] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    stats: dict[str, int] = field(default_factory=dict)
    expired_once: set[int] = field(default_factory=set)
    next_id: int = 1

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def blob_path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise web.HTTPBadRequest(text="bad blob name")
        return self.data / "blobs" / name

    def sign(self, name: str, perms: str, ttl: float = URL_TTL) -> str:
        expiry = int(time.time() + ttl)
        sig = hmac.new(self.secret, f"{name}\n{perms}\n{expiry}".encode(), hashlib.sha256).hexdigest()
        return f"sv={AZURE_VERSION}&sr=b&sp={perms}&se={expiry}&sig={sig}"

    def find(self, scopes: list[str], keys: list[str], version: str) -> Entry | None:
        """GitHub's lookup: exact key, then newest prefix match, scope by scope."""
        for scope in scopes:
            live = [e for e in self.entries if e.committed and e.scope == scope and e.version == version]
            for key in keys:
                for e in live:
                    if e.key == key:
                        return e
            for key in keys:
                hits = [e for e in live if e.key.startswith(key)]
                if hits:
                    return max(hits, key=lambda e: (e.created, e.id))
        return None

    def reserve(self, scope: str, key: str, version: str) -> Entry | None:
        """A new, uncommitted entry; None if the key (and version) exists in the scope, done or in progress."""
        if any(e.scope == scope and e.key == key and e.version == version for e in self.entries):
            return None
        entry = Entry(self.next_id, key, version, scope, uuid.uuid4().hex, time.time())
        self.next_id += 1
        self.entries.append(entry)
        return entry


def _azure_headers(extra: dict[str, str] | None = None, etag: str = "", modified: float = 0.0) -> dict[str, str]:
    h = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-version": AZURE_VERSION,
         "Date": formatdate(usegmt=True), "Server": "workbench-gha-server"}
    if etag:
        h["ETag"] = f'"{etag}"'
    if modified:
        h["Last-Modified"] = formatdate(modified, usegmt=True)
    h.update(extra or {})
    return h


def _azure_error(status: int, code: str, message: str) -> web.Response:
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, body=body.encode(), content_type="application/xml",
                        headers=_azure_headers({"x-ms-error-code": code}))


class Emulator:
    def __init__(self, state: State, azurite: Azurite | None = None) -> None:
        self.state = state
        self.azurite = azurite  # blobs in a real azurite instead of this server's own endpoint
        state.data.mkdir(parents=True, exist_ok=True)
        (state.data / "blobs").mkdir(exist_ok=True)
        (state.data / "blocks").mkdir(exist_ok=True)

    def issue_token(self, scopes: list[tuple[str, int]], ttl: float = 6 * 3600) -> str:
        return tokens.issue(self.state.secret, scopes, ttl)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        r = app.router
        r.add_get("/_apis/artifactcache/cache", self.v1_query)
        r.add_post("/_apis/artifactcache/caches", self.v1_reserve)
        r.add_patch("/_apis/artifactcache/caches/{id}", self.v1_upload)
        r.add_post("/_apis/artifactcache/caches/{id}", self.v1_commit)
        r.add_post(TWIRP_PREFIX + "{method}", self.twirp)
        r.add_route("*", f"/{ACCOUNT}/{CONTAINER}/{{name}}", self.blob)
        r.add_get("/repos/{owner}/{repo}/actions/caches", self.rest_list)
        r.add_post("/_wb/faults", self.set_faults)
        r.add_get("/_wb/stats", self.get_stats)
        r.add_post("/_wb/token", self.new_token)
        return app

    # -- auth and faults ----------------------------------------------------------------------------

    def _scopes(self, request: web.Request) -> tuple[list[str], str]:
        """(readable scopes, writable scope) of the request's token; 401 without a valid one."""
        auth = request.headers.get("Authorization", "")
        found = tokens.verify(self.state.secret, auth[7:]) if auth.startswith("Bearer ") else None
        if found is None:
            raise web.HTTPUnauthorized(text=json.dumps({"message": "invalid or missing runtime token"}),
                                       content_type="application/json")
        write = ""
        for scope, perm in found:
            if perm & 2:
                write = scope
        readable = [s for s, p in found if p & 1]
        readable.sort(key=lambda s: s != write)  # own scope first
        return readable, write

    def _throttled(self) -> web.Response | None:
        if self.state.faults.throttle > 0:
            self.state.faults.throttle -= 1
            self.state.count("throttled")
            return web.json_response({"message": "too many requests"}, status=429, headers={"Retry-After": "1"})
        return None

    def _base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _blob_url(self, request: web.Request, entry: Entry, perms: str) -> str:
        ttl = URL_TTL
        if self.state.faults.expire_urls and perms == "r" and entry.id not in self.state.expired_once:
            self.state.expired_once.add(entry.id)  # the fault: this entry's first download URL is stale
            ttl = -60
        if self.azurite is not None:
            return self.azurite.blob_url(entry.blob, perms, ttl)
        return f"{self._base(request)}/{ACCOUNT}/{CONTAINER}/{entry.blob}?{self.state.sign(entry.blob, perms, ttl)}"

    # -- v1 ----------------------------------------------------------------------------------------

    async def v1_query(self, request: web.Request) -> web.StreamResponse:
        self.state.count("v1.query")
        readable, _ = self._scopes(request)
        if (t := self._throttled()) is not None:
            return t
        keys = [k for k in request.query.get("keys", "").split(",") if k]
        version = request.query.get("version", "")
        if not keys or not version:
            return web.json_response({"message": "keys and version are required"}, status=400)
        entry = self.state.find(readable, keys, version)
        if entry is None:
            return web.Response(status=204)
        entry.accessed = time.time()
        return web.json_response({"cacheKey": entry.key, "scope": entry.scope, "cacheVersion": entry.version,
                                  "creationTime": formatdate(entry.created, usegmt=True),
                                  "archiveLocation": self._blob_url(request, entry, "r")})

    async def v1_reserve(self, request: web.Request) -> web.StreamResponse:
        self.state.count("v1.reserve")
        _, write = self._scopes(request)
        if (t := self._throttled()) is not None:
            return t
        if self.state.faults.fail_writes:
            return web.json_response({"message": "internal error (injected fault)"}, status=500)
        body = await request.json()
        key, version = body.get("key", ""), body.get("version", "")
        if not key or not version:
            return web.json_response({"message": "key and version are required"}, status=400)
        entry = self.state.reserve(write, key, version)
        if entry is None:
            return web.json_response({"$id": "1", "message": f"Cache already exists. Scope: {write}, Key: {key}",
                                      "typeName": "Microsoft.TeamFoundation.Build.WebApi."
                                                  "ArtifactCacheItemAlreadyExistsException",
                                      "typeKey": "ArtifactCacheItemAlreadyExistsException", "errorCode": 0},
                                     status=409)
        return web.json_response({"cacheId": entry.id}, status=201)

    def _entry(self, request: web.Request, write: str) -> Entry:
        try:
            wanted = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPBadRequest(text="bad cache id") from None
        for e in self.state.entries:
            if e.id == wanted and e.scope == write and not e.committed:
                return e
        raise web.HTTPNotFound(text=json.dumps({"message": f"no cache reservation {wanted}"}),
                               content_type="application/json")

    async def v1_upload(self, request: web.Request) -> web.StreamResponse:
        self.state.count("v1.upload")
        _, write = self._scopes(request)
        if (t := self._throttled()) is not None:
            return t
        if self.state.faults.fail_writes:
            return web.json_response({"message": "internal error (injected fault)"}, status=500)
        entry = self._entry(request, write)
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\*|\d+)", request.headers.get("Content-Range", ""))
        if m is None:
            return web.json_response({"message": "Content-Range: bytes START-END/* is required"}, status=400)
        data = await request.read()
        start, end = int(m[1]), int(m[2])
        if end - start + 1 != len(data):
            return web.json_response({"message": "Content-Range does not match the body"}, status=400)
        path = self.state.data / "blocks" / f"v1-{entry.blob}"
        with open(path, "r+b" if path.exists() else "wb") as f:
            f.seek(start)
            f.write(data)
        return web.Response(status=204)

    async def v1_commit(self, request: web.Request) -> web.StreamResponse:
        self.state.count("v1.commit")
        _, write = self._scopes(request)
        if (t := self._throttled()) is not None:
            return t
        entry = self._entry(request, write)
        size = (await request.json()).get("size")
        path = self.state.data / "blocks" / f"v1-{entry.blob}"
        actual = path.stat().st_size if path.exists() else 0
        if not isinstance(size, int) or size != actual:
            return web.json_response({"message": f"size {size} does not match the {actual} bytes uploaded"},
                                     status=400)
        if not path.exists():
            path.write_bytes(b"")
        if self.azurite is not None:
            async with ClientSession() as http:
                async with http.put(self.azurite.blob_url(entry.blob, "cw", 600), data=path.read_bytes(),
                                    headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": AZURE_VERSION}) as r:
                    if r.status != 201:
                        return web.json_response({"message": f"azurite answered {r.status}"}, status=502)
            path.unlink()
        else:
            os.replace(path, self.state.blob_path(entry.blob))
        entry.size, entry.committed = actual, True
        return web.Response(status=204)

    # -- v2 ----------------------------------------------------------------------------------------

    @staticmethod
    def _twirp_error(status: int, code: str, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    async def twirp(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        self.state.count("v2." + method)
        try:
            readable, write = self._scopes(request)
        except web.HTTPUnauthorized:
            return self._twirp_error(401, "unauthenticated", "invalid or missing runtime token")
        if (t := self._throttled()) is not None:
            return t
        try:
            body = await request.json()
        except ValueError:
            return self._twirp_error(400, "malformed", "the body is not JSON")
        key, version = str(body.get("key", "")), str(body.get("version", ""))
        if method == "CreateCacheEntry":
            if self.state.faults.fail_writes:
                return self._twirp_error(500, "internal", "internal error (injected fault)")
            if not key or not version:
                return self._twirp_error(400, "invalid_argument", "key and version are required")
            entry = self.state.reserve(write, key, version)
            if entry is None:
                return self._twirp_error(409, "already_exists",
                                         "cache entry with the same key, version, and scope already exists")
            return web.json_response({"ok": True, "signed_upload_url": self._blob_url(request, entry, "cw")})
        if method == "FinalizeCacheEntryUpload":
            size = body.get("size_bytes", body.get("sizeBytes"))
            try:
                size = int(size)  # a JSON number from BuildKit, a string from @actions/cache (int64 in proto JSON)
            except (TypeError, ValueError):
                return self._twirp_error(400, "invalid_argument", f"size_bytes {size!r} is not an integer")
            for e in self.state.entries:
                if e.scope == write and e.key == key and e.version == version and not e.committed:
                    if await self._blob_size(e.blob) != size:
                        return web.json_response({"ok": False, "entry_id": "0",
                                                  "message": "uploaded blob size does not match size_bytes"})
                    e.size, e.committed = size, True
                    return web.json_response({"ok": True, "entry_id": str(e.id)})
            return self._twirp_error(404, "not_found", f"no pending cache entry {key!r}")
        if method == "GetCacheEntryDownloadURL":
            keys = [key] + [k for k in body.get("restore_keys", body.get("restoreKeys", [])) or [] if k != key]
            entry = self.state.find(readable, [k for k in keys if k], version)
            if entry is None:
                return web.json_response({"ok": False, "signed_download_url": "", "matched_key": ""})
            entry.accessed = time.time()
            return web.json_response({"ok": True, "signed_download_url": self._blob_url(request, entry, "r"),
                                      "matched_key": entry.key})
        return self._twirp_error(404, "bad_route", f"no method {method}")

    async def _blob_size(self, blob: str) -> int:
        """The stored size of a blob (-1 if absent), here or in azurite."""
        if self.azurite is None:
            path = self.state.blob_path(blob)
            return path.stat().st_size if path.exists() else -1
        async with ClientSession() as http:
            async with http.head(self.azurite.blob_url(blob, "r", 600), headers={"x-ms-version": AZURE_VERSION}) as r:
                return int(r.headers.get("Content-Length", "-1")) if r.status == 200 else -1

    async def create_container(self) -> None:
        """Make sure the blob container exists in azurite."""
        if self.azurite is None:
            return
        async with ClientSession() as http:
            async with http.put(self.azurite.container_url(), headers={"x-ms-version": AZURE_VERSION}) as r:
                if r.status not in (201, 409):
                    raise RuntimeError(f"azurite at {self.azurite.endpoint}: creating the container: {r.status} "
                                       f"{(await r.text())[:300]}")

    # -- the blob endpoint ---------------------------------------------------------------------------

    def _check_sig(self, request: web.Request, name: str, need: str) -> web.Response | None:
        q = request.query
        perms, expiry, sig = q.get("sp", ""), q.get("se", ""), q.get("sig", "")
        want = hmac.new(self.state.secret, f"{name}\n{perms}\n{expiry}".encode(), hashlib.sha256).hexdigest()
        if not sig or not hmac.compare_digest(want, sig) or need not in perms:
            return _azure_error(403, "AuthenticationFailed", "Signature did not match or permission missing.")
        if not expiry.isdigit() or int(expiry) < time.time():
            return _azure_error(403, "AuthenticationFailed", "Signed expiry time has passed.")
        return None

    async def blob(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.state.count(f"blob.{request.method}")
        if request.method in ("GET", "HEAD"):
            if (err := self._check_sig(request, name, "r")) is not None:
                return err
            return await self._blob_get(request, name)
        if request.method != "PUT":
            return _azure_error(405, "UnsupportedHttpVerb", "The resource doesn't support the verb.")
        if (err := self._check_sig(request, name, "w")) is not None:
            return err
        if self.state.faults.fail_writes:
            return _azure_error(500, "InternalError", "The server encountered an internal error (injected fault).")
        comp = request.query.get("comp", "")
        data = await request.read()
        blocks = self.state.data / "blocks" / name
        if comp == "block":
            block_id = request.query.get("blockid", "")
            try:
                raw_id = base64.b64decode(block_id, validate=True)
            except ValueError:
                return _azure_error(400, "InvalidQueryParameterValue", "blockid is not base64")
            blocks.mkdir(exist_ok=True)
            (blocks / raw_id.hex()).write_bytes(data)
            return web.Response(status=201, headers=_azure_headers({"x-ms-request-server-encrypted": "true",
                                                                    "Content-Length": "0"}))
        if comp == "blocklist":
            try:
                ids = [el.text or "" for el in ET.fromstring(data) if el.tag in ("Latest", "Uncommitted", "Committed")]
                parts = [blocks / base64.b64decode(i, validate=True).hex() for i in ids]
            except (ET.ParseError, ValueError):
                return _azure_error(400, "InvalidXmlDocument", "the block list is not valid")
            if not all(p.is_file() for p in parts):
                return _azure_error(400, "InvalidBlockList", "The specified block list is invalid.")
            tmp = self.state.data / "blocks" / f"{name}.tmp"
            with open(tmp, "wb") as out:
                for p in parts:
                    out.write(p.read_bytes())
            return self._stored(tmp, name)
        if comp:
            return _azure_error(400, "InvalidQueryParameterValue", f"comp={comp} is not supported")
        if request.headers.get("x-ms-blob-type") != "BlockBlob":
            return _azure_error(400, "MissingRequiredHeader", "x-ms-blob-type: BlockBlob is required.")
        tmp = self.state.data / "blocks" / f"{name}.tmp"
        tmp.write_bytes(data)
        return self._stored(tmp, name)

    def _stored(self, tmp: Path, name: str) -> web.Response:
        path = self.state.blob_path(name)
        os.replace(tmp, path)
        blocks = self.state.data / "blocks" / name
        if blocks.is_dir():
            for p in blocks.iterdir():
                p.unlink()
            blocks.rmdir()
        st = path.stat()
        md5 = base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()
        return web.Response(status=201, headers=_azure_headers(
            {"Content-MD5": md5, "x-ms-request-server-encrypted": "true", "Content-Length": "0"},
            etag=f"0x{st.st_mtime_ns:X}", modified=st.st_mtime))

    async def _blob_get(self, request: web.Request, name: str) -> web.StreamResponse:
        path = self.state.blob_path(name)
        if not path.is_file():
            return _azure_error(404, "BlobNotFound", "The specified blob does not exist.")
        st = path.stat()
        total = st.st_size
        start, end = 0, total - 1
        rng = request.headers.get("x-ms-range") or request.headers.get("Range") or ""
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
        if m is not None:
            start = int(m[1])
            end = min(int(m[2]), total - 1) if m[2] else total - 1
            if start >= total and total > 0:
                return _azure_error(416, "InvalidRange", "The range specified is invalid for the current size.")
        length = max(0, end - start + 1)
        cut = self.state.faults.truncate_downloads
        if cut and request.method == "GET":
            entry = next((e for e in self.state.entries if e.blob == name), None)
            if cut == "*" or (entry is not None and entry.key.startswith(cut)):
                length //= 2
        headers = _azure_headers({"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                                  "x-ms-blob-type": "BlockBlob", "x-ms-server-encrypted": "true",
                                  "x-ms-creation-time": formatdate(st.st_mtime, usegmt=True),
                                  "x-ms-lease-state": "available", "x-ms-lease-status": "unlocked"},
                                 etag=f"0x{st.st_mtime_ns:X}", modified=st.st_mtime)
        status = 200
        if m is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        headers["Content-Length"] = str(length)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if request.method == "GET":
            with open(path, "rb") as f:
                f.seek(start)
                left = length
                while left > 0:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    await resp.write(chunk)
                    left -= len(chunk)
        await resp.write_eof()
        return resp

    # -- REST list and admin ---------------------------------------------------------------------------

    async def rest_list(self, request: web.Request) -> web.StreamResponse:
        self.state.count("rest.list")
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response({"message": "Requires authentication"}, status=401)
        prefix, ref = request.query.get("key", ""), request.query.get("ref", "")
        per_page = max(1, min(100, int(request.query.get("per_page", "30") or 30)))
        page = max(1, int(request.query.get("page", "1") or 1))
        hits = [e for e in self.state.entries
                if e.committed and e.key.startswith(prefix) and (not ref or e.scope == ref)]
        hits.sort(key=lambda e: -e.created)
        chunk = hits[(page - 1) * per_page: page * per_page]
        return web.json_response({"total_count": len(hits), "actions_caches": [
            {"id": e.id, "ref": e.scope, "key": e.key, "version": e.version, "size_in_bytes": e.size,
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.created)),
             "last_accessed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.accessed or e.created))}
            for e in chunk]})

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        self._scopes(request)
        try:
            self.state.faults.update(await request.json())
        except (ValueError, TypeError) as e:
            return web.json_response({"message": str(e)}, status=400)
        return web.json_response(vars(self.state.faults))

    async def new_token(self, request: web.Request) -> web.StreamResponse:
        """Another token, for other scopes: `{"scopes": [["refs/heads/x", 3], ["refs/heads/main", 1]]}`."""
        self._scopes(request)
        try:
            scopes = [(str(s), int(p)) for s, p in (await request.json())["scopes"]]
        except (ValueError, TypeError, KeyError) as e:
            return web.json_response({"message": f"want {{\"scopes\": [[scope, permission], ...]}}: {e}"},
                                     status=400)
        return web.json_response({"token": self.issue_token(scopes)})

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        self._scopes(request)
        return web.json_response({"stats": self.state.stats, "faults": vars(self.state.faults),
                                  "entries": [{"key": e.key, "scope": e.scope, "size": e.size,
                                               "committed": e.committed} for e in self.state.entries]})


async def serve(emulator: Emulator, host: str, port: int, on_ready: Any) -> None:
    await emulator.create_container()
    runner = web.AppRunner(emulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    on_ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(host: str, port: int, data: Path | None, scope: str, read_scopes: list[str], faults: list[str],
         token_ttl: float, azurite: str = "") -> int:
    """Run until interrupted; prints the environment lines to use it."""
    import sys
    import tempfile

    try:
        fault_spec: dict[str, Any] = {}
        for f in faults:
            fault_spec.update(parse_fault(f))
    except ValueError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    tmp = None
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="gha-server-")
        data = Path(tmp.name)
    state = State(data)
    state.faults.update(fault_spec)
    emulator = Emulator(state, Azurite(azurite, CONTAINER) if azurite else None)
    token = emulator.issue_token([(scope, 3)] + [(s, 1) for s in read_scopes], token_ttl)

    def ready(bound: int) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        url = f"http://{shown}:{bound}/"
        print(f"ACTIONS_CACHE_URL={url}\nACTIONS_RESULTS_URL={url}\nACTIONS_RUNTIME_TOKEN={token}", flush=True)
        print(f"gha-server listening on {url} (v1 and v2; set ACTIONS_CACHE_SERVICE_V2=1 for v2)",
              file=sys.stderr, flush=True)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        asyncio.run(serve(emulator, host, port, ready))
    except KeyboardInterrupt:
        pass
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0
