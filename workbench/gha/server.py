"""The emulator: GitHub Actions cache service v1 (`_apis/artifactcache/`), v2 (Twirp `CacheService`), an
Azure-like blob endpoint for signed URLs, and the REST cache list; with faults to inject for tests.

Entries live in memory, blob bytes in files under the data dir. Keys are matched as GitHub does: an exact
key first, then the newest entry whose key starts with a restore key, within the token's readable scopes
(its writable scope first) and only with the same version. New entries go to the token's writable scope.

Every endpoint checks its credentials: the runtime token (signature, expiry, scopes) on the APIs and the
REST list (which lists only the scopes the token may read), the signature and expiry of a signed blob URL
on the blob endpoint; `/_wb/*` wants the token printed at start. Every parameter is checked (400 naming
it), and an upload never goes past its entry's size: v1's reserved `cacheSize`, else MAX_ENTRY.

A reservation whose upload stopped (no write for `--reservation-timeout` seconds, e.g. its build was
killed) can be taken over by a new reservation of the same key, as GitHub's service lets one expire.

With `--azurite URL` the signed URLs point at a real azurite blob service (the emulator signs Azure SAS
for it) instead of this server's own endpoint; the blob faults then do not apply.

Faults (`--fault`, or `POST /_wb/faults` with the token):
  throttle=N                        the next N API calls answer 429 with `Retry-After: 1`
  fail-writes                       reserve/create/upload calls answer 500
  truncate-downloads[=KEY-PREFIX]   blobs (of entries whose key starts with the prefix) are served half
  expire-urls                       the first download URL of each entry has already expired
  slow-uploads=SECONDS              every upload call (v1 PATCH, blob PUT) waits this long first
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import signal
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from workbench.gha import params
from workbench.gha import token as tokens
from workbench.gha.azurite import Azurite
from workbench.gha.bodies import TooLarge, read_json, read_small, receive
from workbench.gha.entries import (
    AZURE_VERSION,
    MAX_ENTRY,
    RESERVATION_TIMEOUT,
    URL_TTL,
    Entry,
    State,
    covered,
    parse_fault,
)
from workbench.gha.params import BadParam

ACCOUNT, CONTAINER = "devstoreaccount1", "actions-cache"
TWIRP_PREFIX = "/twirp/github.actions.results.api.v1.CacheService/"
TWIRP_METHODS = ("CreateCacheEntry", "FinalizeCacheEntryUpload", "GetCacheEntryDownloadURL")
MAX_BLOCKS = 50_000  # Azure's limit on the blocks of a blob
SORTS = {"created_at": lambda e: e.created, "last_accessed_at": lambda e: e.accessed or e.created,
         "size_in_bytes": lambda e: e.size}


class Refused(Exception):
    """A request the emulator answers with an error (in the form of the API it came to)."""

    def __init__(self, status: int, message: str, twirp_code: str = "", azure_code: str = "") -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.twirp_code = twirp_code or {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
                                         404: "not_found", 409: "already_exists"}.get(status, "internal")
        self.azure_code = azure_code or {403: "AuthenticationFailed", 404: "BlobNotFound"}.get(status, "InvalidInput")


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


@dataclass
class Grant:
    """What the request's token allows."""

    readable: list[str]
    write: str
    admin: bool


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Emulator:
    def __init__(self, state: State, azurite: Azurite | None = None) -> None:
        self.state = state
        self.azurite = azurite  # blobs in a real azurite instead of this server's own endpoint
        for d in (state.data, state.data / "blobs", state.data / "blocks"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def issue_token(self, scopes: list[tuple[str, int]], ttl: float = 6 * 3600, admin: bool = False) -> str:
        return tokens.issue(self.state.secret, scopes, ttl, admin)

    def app(self) -> web.Application:
        # bodies are streamed to files (bodies.receive), so nothing needs aiohttp to buffer a large one
        app = web.Application(client_max_size=1 << 20, middlewares=[self._errors])
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

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refusals in the form of the API they came to: Twirp errors, Azure XML, else `{"message"}`."""
        try:
            return await handler(request)
        except BadParam as e:
            refused = Refused(400, str(e), "invalid_argument", "InvalidInput")
        except TooLarge as e:
            refused = Refused(413, str(e), "invalid_argument", "RequestBodyTooLarge")
        except Refused as e:
            refused = e
        if request.path.startswith(TWIRP_PREFIX):
            return web.json_response({"code": refused.twirp_code, "msg": refused.message}, status=refused.status)
        if request.path.startswith(f"/{ACCOUNT}/"):
            return _azure_error(refused.status, refused.azure_code, refused.message)
        return web.json_response({"message": refused.message}, status=refused.status)

    # -- auth and faults ----------------------------------------------------------------------------

    def _grant(self, request: web.Request) -> Grant:
        """What the request's token allows; 401 without a valid one (bad signature, expired, malformed)."""
        auth = request.headers.get("Authorization", "")
        if not auth:
            raise Refused(401, "Requires authentication: no Authorization header")
        found = tokens.verify(self.state.secret, auth[7:]) if auth.startswith("Bearer ") else None
        if found is None:
            raise Refused(401, "Bad credentials: invalid, expired or missing runtime token")
        write = ""
        for scope, perm in found.scopes:
            if perm & tokens.PERM_WRITE:
                write = scope
        readable = [s for s, p in found.scopes if p & tokens.PERM_READ]
        readable.sort(key=lambda s: s != write)  # own scope first
        return Grant(readable, write, found.admin)

    def _writer(self, request: web.Request) -> str:
        """The writable scope of the request's token; 403 for a read-only token."""
        scope = self._grant(request).write
        if not scope:
            raise Refused(403, "the token has no writable cache scope")
        return scope

    def _admin(self, request: web.Request) -> None:
        if not self._grant(request).admin:
            raise Refused(403, "only the token gha-server printed at start may do this")

    def _throttle(self) -> None:
        if self.state.faults.throttle > 0:
            self.state.faults.throttle -= 1
            self.state.count("throttled")
            raise web.HTTPTooManyRequests(text='{"message": "too many requests"}', content_type="application/json",
                                          headers={"Retry-After": "1"})

    def _fail_writes(self) -> None:
        if self.state.faults.fail_writes:
            raise Refused(500, "internal error (injected fault)", "internal", "InternalError")

    async def _slow(self) -> None:
        if self.state.faults.slow_uploads:
            await asyncio.sleep(self.state.faults.slow_uploads)

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
        readable = self._grant(request).readable
        self._throttle()
        keys = params.keys("keys", request.query.get("keys", "").split(","))
        version = params.version("version", request.query.get("version", ""))
        entry = self.state.find(readable, keys, version)
        if entry is None:
            return web.Response(status=204)
        entry.accessed = time.time()
        return web.json_response({"cacheKey": entry.key, "scope": entry.scope, "cacheVersion": entry.version,
                                  "creationTime": formatdate(entry.created, usegmt=True),
                                  "archiveLocation": self._blob_url(request, entry, "r")})

    async def v1_reserve(self, request: web.Request) -> web.StreamResponse:
        self.state.count("v1.reserve")
        write = self._writer(request)
        self._throttle()
        self._fail_writes()
        body = params.json_object(await read_json(request))
        key, version = params.key("key", body.get("key")), params.version("version", body.get("version"))
        size = body.get("cacheSize")
        limit = MAX_ENTRY if size is None else params.json_integer("cacheSize", size, 0, MAX_ENTRY)
        entry = self.state.reserve(write, key, version, limit)
        if entry is None:
            return web.json_response({"$id": "1", "message": f"Cache already exists. Scope: {write}, Key: {key}",
                                      "typeName": "Microsoft.TeamFoundation.Build.WebApi."
                                                  "ArtifactCacheItemAlreadyExistsException",
                                      "typeKey": "ArtifactCacheItemAlreadyExistsException", "errorCode": 0},
                                     status=409)
        return web.json_response({"cacheId": entry.id}, status=201)

    def _reservation(self, request: web.Request, write: str) -> Entry:
        wanted = params.integer("cache id", request.match_info["id"], 0, 1, 1 << 62)
        for e in self.state.entries:
            if e.id == wanted and not e.committed:
                if e.scope != write:
                    raise Refused(403, f"cache reservation {wanted} belongs to another scope")
                return e
        raise Refused(404, f"no cache reservation {wanted}")

    async def v1_upload(self, request: web.Request) -> web.StreamResponse:
        self.state.count("v1.upload")
        write = self._writer(request)
        self._throttle()
        self._fail_writes()
        entry = self._reservation(request, write)
        start, end = params.content_range(request.headers.get("Content-Range", ""), entry.limit)
        await self._slow()
        if not self.state.live(entry):
            raise Refused(404, f"cache reservation {entry.id} was taken over or committed meanwhile")
        await receive(request, self.state.data / "blocks" / f"v1-{entry.blob}", offset=start,
                      limit=end - start + 1, exact=end - start + 1, touch=lambda: self.state.live(entry))
        entry.ranges.append((start, end + 1))
        return web.Response(status=204)

    async def v1_commit(self, request: web.Request) -> web.StreamResponse:
        self.state.count("v1.commit")
        write = self._writer(request)
        self._throttle()
        entry = self._reservation(request, write)
        size = params.json_integer("size", params.json_object(await read_json(request)).get("size"), 0, entry.limit)
        path = self.state.data / "blocks" / f"v1-{entry.blob}"
        actual = path.stat().st_size if path.exists() else 0
        if size != actual:
            raise BadParam("size", f"{size} does not match the {actual} bytes uploaded")
        if (gap := covered(entry.ranges, size)) < size:
            raise BadParam("size", f"bytes from {gap} on were never uploaded")
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        if self.azurite is not None:
            async with ClientSession() as http:
                async with http.put(self.azurite.blob_url(entry.blob, "cw", 600), data=path.read_bytes(),
                                    headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": AZURE_VERSION}) as r:
                    if r.status != 201:
                        raise Refused(502, f"azurite answered {r.status}")
            path.unlink()
        else:
            os.replace(path, self.state.blob_path(entry.blob))
        entry.size, entry.committed = actual, True
        return web.Response(status=204)

    # -- v2 ----------------------------------------------------------------------------------------

    async def twirp(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        grant = self._grant(request)
        if method not in TWIRP_METHODS:
            raise Refused(404, f"no method {method[:80]!r}", "bad_route")
        self.state.count("v2." + method)
        self._throttle()
        body = params.json_object(await read_json(request))
        key, version = params.key("key", body.get("key")), params.version("version", body.get("version"))
        if method == "CreateCacheEntry":
            write = self._writer(request)
            self._fail_writes()
            entry = self.state.reserve(write, key, version)
            if entry is None:
                raise Refused(409, "cache entry with the same key, version, and scope already exists")
            return web.json_response({"ok": True, "signed_upload_url": self._blob_url(request, entry, "cw")})
        if method == "FinalizeCacheEntryUpload":
            write = self._writer(request)
            for e in self.state.entries:
                if e.scope == write and e.key == key and e.version == version and not e.committed:
                    # a JSON number from BuildKit, a string from @actions/cache (int64 in proto JSON)
                    size = params.json_integer("size_bytes", body.get("size_bytes", body.get("sizeBytes")), 0,
                                               e.limit)
                    if await self._blob_size(e.blob) != size:
                        return web.json_response({"ok": False, "entry_id": "0",
                                                  "message": "uploaded blob size does not match size_bytes"})
                    e.size, e.committed = size, True
                    shutil.rmtree(self.state.data / "blocks" / e.blob, ignore_errors=True)
                    return web.json_response({"ok": True, "entry_id": str(e.id)})
            raise Refused(404, f"no pending cache entry {key!r}")
        restore = body.get("restore_keys", body.get("restoreKeys")) or []
        if not isinstance(restore, list):
            raise BadParam("restore_keys", "want a list of keys")
        keys = params.keys("restore_keys", [key] + [k for k in restore if k != key])
        entry = self.state.find(grant.readable, keys, version)
        if entry is None:
            return web.json_response({"ok": False, "signed_download_url": "", "matched_key": ""})
        entry.accessed = time.time()
        return web.json_response({"ok": True, "signed_download_url": self._blob_url(request, entry, "r"),
                                  "matched_key": entry.key})

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

    def _check_sig(self, request: web.Request, name: str, need: str) -> None:
        """The signed URL's signature (of the blob, its permissions and expiry), permission and expiry."""
        q = request.query
        perms, expiry, sig = q.get("sp", ""), q.get("se", ""), q.get("sig", "")
        want = self.state.signature(name, perms, expiry)
        if not sig or not hmac.compare_digest(want, sig) or need not in perms:
            raise Refused(403, "Signature did not match or permission missing.", azure_code="AuthenticationFailed")
        if not expiry.isdigit() or int(expiry) < time.time():
            raise Refused(403, "Signed expiry time has passed.", azure_code="AuthenticationFailed")

    async def blob(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.method not in ("GET", "HEAD", "PUT"):
            return _azure_error(405, "UnsupportedHttpVerb", "The resource doesn't support the verb.")
        self.state.count(f"blob.{request.method}")
        self._check_sig(request, name, "r" if request.method in ("GET", "HEAD") else "w")
        path = self.state.blob_path(name)
        if request.method in ("GET", "HEAD"):
            return await self._blob_get(request, name, path)
        self._fail_writes()
        entry = self.state.uploading(name)
        if entry is None:
            raise Refused(409, "The blob's cache entry is committed or gone: it takes no more writes.",
                          azure_code="BlobImmutable")
        await self._slow()
        if not self.state.live(entry):
            raise Refused(409, "The blob's cache entry was taken over or committed meanwhile.",
                          azure_code="BlobImmutable")
        comp = request.query.get("comp", "")
        blocks = self.state.data / "blocks" / name
        tmp = self.state.data / "blocks" / f"{name}.tmp"
        if comp == "block":
            raw_id = params.block_id(request.query.get("blockid", ""))
            blocks.mkdir(mode=0o700, exist_ok=True)
            staged = {p.name: p.stat().st_size for p in blocks.iterdir()}
            if raw_id.hex() not in staged and len(staged) >= MAX_BLOCKS:
                raise BadParam("blockid", f"the blob has {MAX_BLOCKS} uncommitted blocks already")
            room = entry.limit - sum(staged.values()) + staged.get(raw_id.hex(), 0)
            await receive(request, blocks / raw_id.hex(), offset=0, limit=room, truncate=True,
                          touch=lambda: self.state.live(entry))
            return web.Response(status=201, headers=_azure_headers({"x-ms-request-server-encrypted": "true",
                                                                    "Content-Length": "0"}))
        if comp == "blocklist":
            try:
                doc = ET.fromstring(await read_small(request, 8 << 20))
                ids = [el.text or "" for el in doc if el.tag in ("Latest", "Uncommitted", "Committed")]
                parts = [blocks / params.block_id(i).hex() for i in ids]
            except ET.ParseError:
                raise BadParam("block list", "not a valid XML block list") from None
            if not all(p.is_file() for p in parts):
                raise Refused(400, "The specified block list is invalid.", azure_code="InvalidBlockList")
            if sum(p.stat().st_size for p in parts) > entry.limit:
                raise TooLarge(f"the blocks add up to more than the {entry.limit} bytes allowed")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
            return self._stored(tmp, name)
        if comp:
            raise BadParam("comp", f"{comp[:40]!r} is not supported (block, blocklist)")
        if request.headers.get("x-ms-blob-type") != "BlockBlob":
            raise Refused(400, "x-ms-blob-type: BlockBlob is required.", azure_code="MissingRequiredHeader")
        await receive(request, tmp, offset=0, limit=entry.limit, truncate=True, touch=lambda: self.state.live(entry))
        return self._stored(tmp, name)

    def _stored(self, tmp: Path, name: str) -> web.Response:
        path = self.state.blob_path(name)
        os.replace(tmp, path)
        shutil.rmtree(self.state.data / "blocks" / name, ignore_errors=True)
        st = path.stat()
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            while piece := f.read(1 << 20):
                md5.update(piece)
        return web.Response(status=201, headers=_azure_headers(
            {"Content-MD5": base64.b64encode(md5.digest()).decode(), "x-ms-request-server-encrypted": "true",
             "Content-Length": "0"}, etag=f"0x{st.st_mtime_ns:X}", modified=st.st_mtime))

    async def _blob_get(self, request: web.Request, name: str, path: Path) -> web.StreamResponse:
        entry = next((e for e in self.state.entries if e.blob == name and e.committed), None)
        if entry is None or not path.is_file():
            raise Refused(404, "The specified blob does not exist.", azure_code="BlobNotFound")
        st = path.stat()
        total = st.st_size
        header = "x-ms-range" if "x-ms-range" in request.headers else "Range"
        rng = params.byte_range(header, request.headers.get(header, ""), total)
        start, end = rng if rng is not None else (0, total - 1)
        if rng is not None and start >= total and total > 0:
            raise Refused(416, "The range specified is invalid for the current size.", azure_code="InvalidRange")
        length = max(0, end - start + 1)
        cut = self.state.faults.truncate_downloads
        if cut and request.method == "GET" and (cut == "*" or entry.key.startswith(cut)):
            length //= 2
        headers = _azure_headers({"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                                  "x-ms-blob-type": "BlockBlob", "x-ms-server-encrypted": "true",
                                  "x-ms-creation-time": formatdate(st.st_mtime, usegmt=True),
                                  "x-ms-lease-state": "available", "x-ms-lease-status": "unlocked"},
                                 etag=f"0x{st.st_mtime_ns:X}", modified=st.st_mtime)
        status = 200
        if rng is not None:
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
        """GitHub's `GET /repos/{owner}/{repo}/actions/caches`, over the scopes the token may read."""
        self.state.count("rest.list")
        readable = self._grant(request).readable
        q = request.query
        per_page = params.integer("per_page", q.get("per_page"), 30, 1, 100)
        page = params.integer("page", q.get("page"), 1, 1, 1_000_000)
        prefix = q.get("key", "")
        if len(prefix) > params.MAX_KEY:
            raise BadParam("key", f"longer than {params.MAX_KEY} characters")
        ref = q.get("ref", "")
        sort = q.get("sort", "last_accessed_at")
        if sort not in SORTS:
            raise BadParam("sort", f"{sort[:40]!r} is not one of {', '.join(SORTS)}")
        direction = q.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise BadParam("direction", f"{direction[:40]!r} is not asc or desc")
        hits = [e for e in self.state.entries if e.committed and e.scope in readable
                and e.key.startswith(prefix) and (not ref or e.scope == ref)]
        hits.sort(key=lambda e: (SORTS[sort](e), e.id), reverse=direction == "desc")
        chunk = hits[(page - 1) * per_page: page * per_page]
        return web.json_response({"total_count": len(hits), "actions_caches": [
            {"id": e.id, "ref": e.scope, "key": e.key, "version": e.version, "size_in_bytes": e.size,
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.created)),
             "last_accessed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.accessed or e.created))}
            for e in chunk]})

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        self._admin(request)
        self.state.faults.update(params.json_object(await read_json(request)))
        return web.json_response(vars(self.state.faults))

    async def new_token(self, request: web.Request) -> web.StreamResponse:
        """Another token, for other scopes: `{"scopes": [["refs/heads/x", 3], ["refs/heads/main", 1]]}`
        (and `"ttl": SECONDS`, negative for one that has expired already)."""
        self._admin(request)
        body = params.json_object(await read_json(request))
        raw = body.get("scopes")
        if not isinstance(raw, list) or not all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
                                                for s in raw):
            raise BadParam("scopes", 'want [[scope, permission], ...]')
        scopes = [(s, params.json_integer("permission", p, 1, 3)) for s, p in raw]
        ttl = params.json_integer("ttl", body.get("ttl", 6 * 3600), -86400, 30 * 86400)
        return web.json_response({"token": self.issue_token(scopes, ttl)})

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        self._admin(request)
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
         token_ttl: float, azurite: str = "", reservation_timeout: float = RESERVATION_TIMEOUT) -> int:
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
    if reservation_timeout < 0:
        print("workbench: error: --reservation-timeout must be 0 or more seconds", file=sys.stderr)
        return 2
    tmp = None
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="gha-server-")
        data = Path(tmp.name)
    state = State(data, reservation_timeout=reservation_timeout)
    state.faults.update(fault_spec)
    emulator = Emulator(state, Azurite(azurite, CONTAINER) if azurite else None)
    token = emulator.issue_token([(scope, 3)] + [(s, 1) for s in read_scopes], token_ttl, admin=True)

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
