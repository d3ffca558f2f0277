"""`workbench gha-server` checks its callers: a token (signature, expiry, scopes) on every API endpoint and
the REST list, a valid signed URL on the blob endpoint; every parameter (400 naming it); and the size an
upload may reach (no sparse terabyte file from a huge Content-Range offset)."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cache_remote import GhaServer

VERSION = "0" * 64
TWIRP = "twirp/github.actions.results.api.v1.CacheService/"
SECRET_KEY = "secret-key-of-main"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> dict[str, object]:
        return dict(json.loads(self.body))


def call(url: str, method: str = "GET", token: str | None = None, body: bytes | dict[str, object] | None = None,
         headers: dict[str, str] | None = None) -> Answer:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Answer(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, dict(e.headers), e.read())


@pytest.fixture(scope="module")
def gha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhaServer]:
    server = GhaServer(tmp_path_factory.mktemp("gha-auth"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seeded(gha: GhaServer) -> dict[str, object]:
    """A committed entry in refs/heads/main (v2) and an open v1 reservation there."""
    created = call(gha.url + TWIRP + "CreateCacheEntry", "POST", gha.token, {"key": SECRET_KEY, "version": VERSION})
    assert created.status == 200, created.text
    upload_url = str(created.json()["signed_upload_url"])
    assert call(upload_url, "PUT", body=b"secret bytes", headers={"x-ms-blob-type": "BlockBlob"}).status == 201
    final = call(gha.url + TWIRP + "FinalizeCacheEntryUpload", "POST", gha.token,
                 {"key": SECRET_KEY, "version": VERSION, "size_bytes": 12})
    assert final.json()["ok"] is True
    reserved = call(gha.url + "_apis/artifactcache/caches", "POST", gha.token,
                    {"key": "pending-of-main", "version": VERSION})
    assert reserved.status == 201, reserved.text
    return {"upload_url": upload_url, "cache_id": reserved.json()["cacheId"]}


def _bad_tokens(gha: GhaServer) -> dict[str, str | None]:
    head, claims, sig = gha.token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    doc["ac"] = json.dumps([{"Scope": "refs/heads/evil", "Permission": 3}])  # claims changed, signature kept
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return {"none": None, "garbage": "not-a-token", "tampered": f"{head}.{forged}.{sig}",
            "unsigned": f"{head}.{claims}.", "expired": _expired_token(gha)}


def _expired_token(gha: GhaServer) -> str:
    got = call(gha.url + "_wb/token", "POST", gha.token, {"scopes": [["refs/heads/main", 3]], "ttl": -60})
    assert got.status == 200, got.text
    return str(got.json()["token"])


def _endpoints(gha: GhaServer, cache_id: object) -> list[tuple[str, str, dict[str, object] | None, dict[str, str]]]:
    u = gha.url
    return [
        ("GET", u + f"_apis/artifactcache/cache?keys={SECRET_KEY}&version={VERSION}", None, {}),
        ("POST", u + "_apis/artifactcache/caches", {"key": "new", "version": VERSION}, {}),
        ("PATCH", u + f"_apis/artifactcache/caches/{cache_id}", None,
         {"Content-Range": "bytes 0-2/*", "Content-Type": "application/octet-stream"}),
        ("POST", u + f"_apis/artifactcache/caches/{cache_id}", {"size": 0}, {}),
        ("POST", u + TWIRP + "CreateCacheEntry", {"key": "new", "version": VERSION}, {}),
        ("POST", u + TWIRP + "FinalizeCacheEntryUpload", {"key": "new", "version": VERSION, "size_bytes": 0}, {}),
        ("POST", u + TWIRP + "GetCacheEntryDownloadURL", {"key": SECRET_KEY, "version": VERSION}, {}),
        ("POST", u + TWIRP + "NoSuchMethod", {}, {}),
        ("GET", u + "repos/o/r/actions/caches", None, {}),
        ("POST", u + "_wb/faults", {"throttle": 5}, {}),
        ("GET", u + "_wb/stats", None, {}),
        ("POST", u + "_wb/token", {"scopes": [["refs/heads/main", 3]]}, {}),
    ]


def test_every_endpoint_refuses_a_missing_or_bad_token(gha: GhaServer, seeded: dict[str, object]) -> None:
    for name, token in _bad_tokens(gha).items():
        for method, url, body, headers in _endpoints(gha, seeded["cache_id"]):
            data: bytes | dict[str, object] | None = b"abc" if method == "PATCH" else body
            got = call(url, method, token, data, headers)
            assert got.status == 401, (name, method, url, got.status, got.text)
            assert SECRET_KEY not in got.text and "refs/heads/main" not in got.text
    stats = call(gha.url + "_wb/stats", token=gha.token).json()
    assert stats["faults"]["throttle"] == 0  # type: ignore[index]
    entries = {str(e["key"]): e for e in stats["entries"]}  # type: ignore[attr-defined]
    assert "new" not in entries and entries["pending-of-main"]["committed"] is False


def test_another_scope_sees_and_touches_nothing(gha: GhaServer, seeded: dict[str, object]) -> None:
    other = gha.token_for(("refs/heads/other", 3))
    reader = gha.token_for(("refs/heads/main", 1))
    u, cache_id = gha.url, seeded["cache_id"]
    # lookups and the REST list answer only from the scopes the token may read
    assert call(u + f"_apis/artifactcache/cache?keys={SECRET_KEY}&version={VERSION}", token=other).status == 204
    got = call(u + TWIRP + "GetCacheEntryDownloadURL", "POST", other, {"key": SECRET_KEY, "version": VERSION})
    assert got.status == 200 and got.json()["ok"] is False
    listed = call(u + "repos/o/r/actions/caches?per_page=100", token=other)
    assert listed.status == 200 and listed.json() == {"total_count": 0, "actions_caches": []}
    by_ref = call(u + "repos/o/r/actions/caches?ref=refs/heads/main", token=other)
    assert by_ref.status == 200 and by_ref.json()["total_count"] == 0 and SECRET_KEY not in by_ref.text
    mine = call(u + "repos/o/r/actions/caches", token=reader)
    assert [c["key"] for c in mine.json()["actions_caches"]] == [SECRET_KEY]  # type: ignore[attr-defined]
    # writes to main's reservation from another scope, and writes with a read-only token
    up = call(u + f"_apis/artifactcache/caches/{cache_id}", "PATCH", other, b"abc",
              {"Content-Range": "bytes 0-2/*", "Content-Type": "application/octet-stream"})
    assert up.status == 403 and "another scope" in up.text, up.text
    commit = call(u + f"_apis/artifactcache/caches/{cache_id}", "POST", other, {"size": 0})
    assert commit.status == 403, commit.text
    final = call(u + TWIRP + "FinalizeCacheEntryUpload", "POST", other,
                 {"key": "pending-of-main", "version": VERSION, "size_bytes": 0})
    assert final.status == 404, final.text
    for url in (u + "_apis/artifactcache/caches", u + TWIRP + "CreateCacheEntry"):
        ro = call(url, "POST", reader, {"key": "ro", "version": VERSION})
        assert ro.status == 403 and "no writable cache scope" in ro.text, ro.text
    # only the token printed at start administers the server
    admin_calls: list[tuple[str, dict[str, object]]] = [(u + "_wb/faults", {"fail-writes": True}),
                                                         (u + "_wb/token", {"scopes": [["x", 3]]})]
    for url, admin_body in admin_calls:
        assert call(url, "POST", other, admin_body).status == 403
    assert call(u + "_wb/stats", token=other).status == 403
    stats = call(u + "_wb/stats", token=gha.token).json()
    entries = {str(e["key"]): e for e in stats["entries"]}  # type: ignore[attr-defined]
    assert set(entries) == {SECRET_KEY, "pending-of-main"} and entries["pending-of-main"]["committed"] is False
    assert stats["faults"]["fail_writes"] is False  # type: ignore[index]


def test_signed_blob_urls_are_checked(gha: GhaServer, seeded: dict[str, object]) -> None:
    got = call(gha.url + TWIRP + "GetCacheEntryDownloadURL", "POST", gha.token, {"key": SECRET_KEY,
                                                                                 "version": VERSION})
    download = str(got.json()["signed_download_url"])
    assert call(download).body == b"secret bytes"
    base, _, query = download.partition("?")
    q = dict(urllib.parse.parse_qsl(query))
    name = base.rsplit("/", 1)[1]

    def with_(**change: str) -> str:
        return base + "?" + urllib.parse.urlencode({**q, **change})

    forged = {
        "no query": base,
        "bad signature": with_(sig="0" * 64),
        "later expiry": with_(se=str(int(q["se"]) + 3600)),
        "more permissions": with_(sp="rcw"),
        "another blob": base.replace(name, "0" * 32) + "?" + query,
    }
    for what, url in forged.items():
        for method in ("GET", "HEAD"):
            answer = call(url, method)
            assert answer.status == 403, (what, method, answer.status)
            assert b"secret bytes" not in answer.body
    # a download URL does not write, and the upload URL of a committed entry writes no more
    assert call(download, "PUT", body=b"overwritten", headers={"x-ms-blob-type": "BlockBlob"}).status == 403
    late = call(str(seeded["upload_url"]), "PUT", body=b"overwritten", headers={"x-ms-blob-type": "BlockBlob"})
    assert late.status == 409, late.text
    assert call(str(seeded["upload_url"])).status == 403  # an upload URL does not read
    gha.faults(expire_urls=True)
    try:
        stale = call(gha.url + TWIRP + "GetCacheEntryDownloadURL", "POST", gha.token,
                     {"key": SECRET_KEY, "version": VERSION}).json()
    finally:
        gha.faults(expire_urls=False)
    expired = call(str(stale["signed_download_url"]))
    assert expired.status == 403 and "expiry" in expired.text
    assert call(download).body == b"secret bytes"


BAD_PARAMS: list[tuple[str, str, str, object, dict[str, str], str]] = [
    # (id, method, path, body, headers, text the answer must name)
    ("per_page=abc", "GET", "repos/o/r/actions/caches?per_page=abc", None, {}, "per_page"),
    ("per_page=0", "GET", "repos/o/r/actions/caches?per_page=0", None, {}, "per_page"),
    ("per_page=101", "GET", "repos/o/r/actions/caches?per_page=101", None, {}, "per_page"),
    ("page=-1", "GET", "repos/o/r/actions/caches?page=-1", None, {}, "page"),
    ("page=huge", "GET", "repos/o/r/actions/caches?page=" + "9" * 40, None, {}, "page"),
    ("sort", "GET", "repos/o/r/actions/caches?sort=name", None, {}, "sort"),
    ("direction", "GET", "repos/o/r/actions/caches?direction=up", None, {}, "direction"),
    ("v1 no keys", "GET", f"_apis/artifactcache/cache?version={VERSION}", None, {}, "keys"),
    ("v1 no version", "GET", "_apis/artifactcache/cache?keys=a", None, {}, "version"),
    ("v1 eleven keys", "GET", f"_apis/artifactcache/cache?keys={','.join('k' * 11)}&version=v", None, {}, "keys"),
    ("reserve not json", "POST", "_apis/artifactcache/caches", b"{nope", {}, "body"),
    ("reserve not object", "POST", "_apis/artifactcache/caches", b"[1]", {}, "body"),
    ("reserve no key", "POST", "_apis/artifactcache/caches", {"version": VERSION}, {}, "key"),
    ("reserve long key", "POST", "_apis/artifactcache/caches", {"key": "k" * 600, "version": VERSION}, {}, "key"),
    ("reserve comma key", "POST", "_apis/artifactcache/caches", {"key": "a,b", "version": VERSION}, {}, "key"),
    ("reserve cacheSize", "POST", "_apis/artifactcache/caches", {"key": "k", "version": VERSION, "cacheSize": "x"},
     {}, "cacheSize"),
    ("reserve cacheSize<0", "POST", "_apis/artifactcache/caches", {"key": "k", "version": VERSION, "cacheSize": -1},
     {}, "cacheSize"),
    ("upload id", "PATCH", "_apis/artifactcache/caches/abc", b"abc", {"Content-Range": "bytes 0-2/*"}, "cache id"),
    ("upload no range", "PATCH", "_apis/artifactcache/caches/{id}", b"abc", {}, "Content-Range"),
    ("upload reversed", "PATCH", "_apis/artifactcache/caches/{id}", b"abc", {"Content-Range": "bytes 5-1/*"},
     "Content-Range"),
    ("upload length", "PATCH", "_apis/artifactcache/caches/{id}", b"abc", {"Content-Range": "bytes 0-9/*"},
     "Content-"),
    ("commit size", "POST", "_apis/artifactcache/caches/{id}", {"size": "big"}, {}, "size"),
    ("commit size<0", "POST", "_apis/artifactcache/caches/{id}", {"size": -5}, {}, "size"),
    ("twirp not json", "POST", TWIRP + "CreateCacheEntry", b"\xff\xfe", {}, "body"),
    ("twirp no key", "POST", TWIRP + "GetCacheEntryDownloadURL", {"version": VERSION}, {}, "key"),
    ("twirp restore_keys", "POST", TWIRP + "GetCacheEntryDownloadURL",
     {"key": "a", "version": VERSION, "restore_keys": "a"}, {}, "restore_keys"),
    ("twirp size_bytes", "POST", TWIRP + "FinalizeCacheEntryUpload",
     {"key": "pending-v2", "version": VERSION, "size_bytes": "abc"}, {}, "size_bytes"),
    ("faults", "POST", "_wb/faults", {"throttle": "lots"}, {}, "throttle"),
    ("token scopes", "POST", "_wb/token", {"scopes": "all"}, {}, "scopes"),
    ("token permission", "POST", "_wb/token", {"scopes": [["x", 9]]}, {}, "permission"),
]


def test_bad_parameters_are_400_with_a_message(gha: GhaServer) -> None:
    wrong = []
    for name, method, path, body, headers, names in BAD_PARAMS:
        if "{id}" in path:
            reserved = call(gha.url + "_apis/artifactcache/caches", "POST", gha.token,
                            {"key": f"params-{name}", "version": VERSION, "cacheSize": 10})
            path = path.replace("{id}", str(reserved.json()["cacheId"]))
        if "pending-v2" in str(body):
            call(gha.url + TWIRP + "CreateCacheEntry", "POST", gha.token, {"key": "pending-v2", "version": VERSION})
        got = call(gha.url + path, method, gha.token, body,  # type: ignore[arg-type]
                   {"Content-Type": "application/json", **headers})
        try:
            doc = got.json()
        except ValueError:
            doc = {}
        message = str(doc.get("message") or doc.get("msg"))
        if got.status != 400 or names not in message or "Traceback" in got.text:
            wrong.append(f"{name}: {got.status} {got.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_blob_parameters_are_400_with_a_message(gha: GhaServer) -> None:
    created = call(gha.url + TWIRP + "CreateCacheEntry", "POST", gha.token, {"key": "blob-params", "version": VERSION})
    url = str(created.json()["signed_upload_url"])
    bad_block = call(url + "&comp=block&blockid=%25%25%25", "PUT", body=b"abc")
    assert bad_block.status == 400 and "blockid" in bad_block.text, bad_block.text
    bad_comp = call(url + "&comp=appendblock", "PUT", body=b"abc")
    assert bad_comp.status == 400 and "comp" in bad_comp.text, bad_comp.text
    bad_list = call(url + "&comp=blocklist", "PUT", body=b"<BlockList><Latest>")
    assert bad_list.status == 400 and "block list" in bad_list.text, bad_list.text
    assert call(url, "PUT", body=b"abcdef", headers={"x-ms-blob-type": "BlockBlob"}).status == 201
    call(gha.url + TWIRP + "FinalizeCacheEntryUpload", "POST", gha.token,
         {"key": "blob-params", "version": VERSION, "size_bytes": 6})
    got = call(gha.url + TWIRP + "GetCacheEntryDownloadURL", "POST", gha.token,
               {"key": "blob-params", "version": VERSION}).json()
    for rng in ("bytes=abc", "bytes=4-1", "items=0-1"):
        answer = call(str(got["signed_download_url"]), headers={"x-ms-range": rng})
        assert answer.status == 400 and "x-ms-range" in answer.text, (rng, answer.status, answer.text)


def _allocated(data: Path) -> tuple[int, int]:
    """(bytes allocated on disk, largest apparent file size) under the data dir."""
    files = [p for p in data.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files), max((p.stat().st_size for p in files), default=0)


def test_upload_offsets_are_capped_by_the_reserved_size(gha: GhaServer) -> None:
    argv = [str(a) for a in gha.proc.args]  # type: ignore[union-attr]
    data = Path(argv[argv.index("--data") + 1])
    sized = call(gha.url + "_apis/artifactcache/caches", "POST", gha.token,
                 {"key": "sized", "version": VERSION, "cacheSize": 10}).json()["cacheId"]
    unsized = call(gha.url + "_apis/artifactcache/caches", "POST", gha.token,
                   {"key": "unsized", "version": VERSION}).json()["cacheId"]
    tera = 1 << 40
    for cache_id, start in ((sized, tera), (sized, 8), (unsized, tera)):
        got = call(gha.url + f"_apis/artifactcache/caches/{cache_id}", "PATCH", gha.token, b"abcd",
                   {"Content-Range": f"bytes {start}-{start + 3}/*", "Content-Type": "application/octet-stream"})
        message = str(got.json()["message"])
        assert got.status == 400 and "Content-Range" in message and "reserved" in message, (start, got.text)
    allocated, largest = _allocated(data)
    assert allocated < 1 << 20 and largest < 1 << 20, (allocated, largest)
    # a body longer than it says cannot grow the entry either: the server stops at the declared size
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(gha.url).netloc, timeout=10)
    conn.putrequest("PATCH", f"/_apis/artifactcache/caches/{sized}")
    for k, v in {"Authorization": f"Bearer {gha.token}", "Content-Range": "bytes 0-3/*",
                 "Transfer-Encoding": "chunked"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (1 << 16, b"x" * (1 << 16)))
    resp = conn.getresponse()
    assert resp.status in (400, 413), resp.status
    conn.close()
    # a commit must cover every byte it claims
    assert call(gha.url + f"_apis/artifactcache/caches/{sized}", "PATCH", gha.token, b"wxyz",
                {"Content-Range": "bytes 4-7/*", "Content-Type": "application/octet-stream"}).status == 204
    holes = call(gha.url + f"_apis/artifactcache/caches/{sized}", "POST", gha.token, {"size": 8})
    assert holes.status == 400 and "never uploaded" in holes.text, holes.text
    allocated, largest = _allocated(data)
    assert allocated < 1 << 20 and largest < 1 << 20, (allocated, largest)
