"""Pulls that download, verify and extract layers in one pass, several layers at once (issue 19).

A real registry (`image_registry`) behind a small proxy that can hold back the tail of a layer blob (so a
test sees what happens while it downloads) or flip one of its bytes on the wire.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.registry_fixture import Registry, image_registry_fixture  # noqa: F401
from workbench.fsutil.tar import extract
from workbench.llb.ops import ImageSource
from workbench.progress.events import EventBus
from workbench.solver.runners import pull_image
from workbench.solver.types import SolveError
from workbench.worker import Worker, chain_id

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
BIG = 3 << 20  # random bytes after each layer's marker: more than a download chunk, so its head arrives first


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti in entries:
            if ti.isreg():
                ti.size = len(data.get(ti.name, b""))
                t.addfile(ti, io.BytesIO(data.get(ti.name, b"")))
            else:
                t.addfile(ti)
    return raw.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, 1_700_000_000, link
    return ti


def _layers(seed: int) -> list[bytes]:
    """Three layer tars: each a marker file first, then big random data; hard links, symlinks, a whiteout."""
    rnd = __import__("random").Random(seed)
    tars = []
    for n in range(3):
        data = {f"marker-{seed}-{n}": b"m%d" % n, f"d{n}/big": rnd.randbytes(BIG), f"d{n}/text": b"hello\n" * 999}
        entries = [_entry(f"marker-{seed}-{n}"), _entry(f"d{n}", tarfile.DIRTYPE, 0o755), _entry(f"d{n}/big"),
                   _entry(f"d{n}/text"), _entry(f"d{n}/hard", tarfile.LNKTYPE, link=f"d{n}/text"),
                   _entry(f"d{n}/sym", tarfile.SYMTYPE, 0o777, link="text")]
        if n == 2:
            entries += [_entry("d0", tarfile.DIRTYPE, 0o755), _entry("d0/.wh.text")]  # deletes a bottom file
        tars.append(_tar(entries, data))
    return tars


def _gzip(tar: bytes, members: int) -> bytes:
    """`tar` as `members` concatenated gzip members (as parallel compressors write), zero padding after."""
    cut = len(tar) // members
    parts = [tar[i * cut: (i + 1) * cut if i < members - 1 else len(tar)] for i in range(members)]
    return b"".join(gzip.compress(p, mtime=0) for p in parts) + (b"\0" * 7 if members > 1 else b"")


def _push(reg: Registry, repo: str, tars: list[bytes], diff_ids: list[str] | None = None) -> list[str]:
    """Push an image of `tars` (the middle one as two gzip members) whose config gives `diff_ids` (the tars'
    own by default); its layer blob digests."""
    blobs = [_gzip(t, 2 if i == 1 else 1) for i, t in enumerate(tars)]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers",
                                    "diff_ids": diff_ids or [_digest(t) for t in tars]}}).encode()
    for blob in [*blobs, config]:
        reg.push_blob(repo, blob)
    reg.push_manifest(repo, "latest", {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": _digest(b), "size": len(b)} for b in blobs]}, OCI_MANIFEST)
    return [_digest(b) for b in blobs]


class Proxy:
    """Forwards GETs to the registry; can hold back a blob's last bytes until `release` is set (or a marker file
    shows up under `watch`), and flip a byte of a blob at an offset."""

    TAIL = 64 << 10

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold: set[str] = set()  # blob digests whose tail waits
        self.release = threading.Event()
        self.watch: tuple[Path, list[str]] | None = None  # release once all these file names were seen below the dir
        self.seen: set[str] = set()
        self.timed_out: list[str] = []
        self.corrupt: dict[str, int] = {}  # blob digest → offset of the byte flipped
        self.cut: set[str] = set()  # blob digests whose first download breaks off halfway
        self.ranges: list[str] = []  # the Range headers asked for
        self.head_sent = threading.Event()  # some held blob's head went out
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                proxy.forward(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "range", "authorization")}
        conn.request("GET", h.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        digest = h.path.rsplit("/", 1)[-1] if "/blobs/" in h.path else ""
        if digest in self.corrupt:
            at = self.corrupt[digest]
            body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if "Range" in h.headers:
            self.ranges.append(h.headers["Range"])
        if digest in self.cut:
            self.cut.discard(digest)
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if digest in self.hold:
            h.wfile.write(body[:-self.TAIL])
            h.wfile.flush()
            self.head_sent.set()
            if not self.wait_release():
                self.timed_out.append(digest)
            body = body[-self.TAIL:]
        try:
            h.wfile.write(body)
        except OSError:
            pass  # the client went away (killed)

    def wait_release(self, timeout: float = 15.0) -> bool:
        for _ in range(int(timeout / 0.05)):
            if self.release.is_set():
                return True
            if self.watch is not None:
                # what was seen stays seen, and frees every held tail: a layer that got its tail finishes and is
                # committed out of `top` at once, so a later look might never see all the markers together
                top, names = self.watch
                self.seen |= {p.name for p in top.rglob("marker-*")} if top.exists() else set()
                if all(n in self.seen for n in names):
                    self.release.set()
                    return True
            self.release.wait(0.05)
        return False

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(image_registry: Registry) -> Iterator[Proxy]:
    p = Proxy(image_registry.host)
    yield p
    p.close()


def _pull(root: Path, ref: str) -> list[str]:
    worker = Worker(root)
    try:
        v = SimpleNamespace(digest="v", name=f"FROM {ref}")
        return pull_image(worker, EventBus(), v, ImageSource(ref, "", "linux/amd64"))  # type: ignore[arg-type]
    finally:
        worker.close()


def _tree(top: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else os.readlink(path) \
                if path.is_symlink() else b""
            out[str(path.relative_to(top))] = (st.st_mode, st.st_uid, st.st_rdev, int(st.st_mtime), st.st_nlink,
                                               hashlib.sha256(content if isinstance(content, bytes)
                                                              else content.encode()).hexdigest())
    return out


def _reference(tars: list[bytes], tmp: Path) -> list[dict[str, tuple[Any, ...]]]:
    """Each layer extracted alone, as a pull unpacked it before (straight from its gzip bytes)."""
    trees = []
    for i, t in enumerate(tars):
        dest = tmp / f"ref{i}"
        dest.mkdir()
        extract(io.BytesIO(_gzip(t, 1)), dest, whiteouts=True)
        trees.append(_tree(dest))
    return trees


def _keys(tars: list[bytes]) -> list[str]:
    keys, cid = [], ""
    for t in tars:
        cid = chain_id(cid, _digest(t))
        keys.append("layer:" + cid)
    return keys


def _trusted(root: Path, tars: list[bytes], digests: list[str]) -> tuple[list[bool], list[bool], list[str]]:
    """(blob in the store, chain recorded) per layer, and the marker files of committed snapshots."""
    worker = Worker(root)
    try:
        blobs = [worker.content.has(d) for d in digests]
        chains = [worker.store.lookup(k) is not None for k in _keys(tars)]
    finally:
        worker.close()
    markers = sorted(p.name for p in (root / "snapshots").glob("*/fs/marker-*"))
    return blobs, chains, markers


def test_multi_layer_pull_gives_the_same_snapshots(image_registry: Registry, proxy: Proxy, root: Path,
                                                   tmp_path: Path) -> None:
    tars = _layers(1)
    digests = _push(image_registry, "multi", tars)
    chain = _pull(root, f"{proxy.host}/multi")
    assert len(chain) == 3
    snapshots = root / "snapshots"
    assert [_tree(snapshots / s / "fs") for s in chain] == _reference(tars, tmp_path)
    top = snapshots / chain[0] / "fs"
    assert (top / "d0" / "big").read_bytes() == tarfile.open(fileobj=io.BytesIO(tars[0])).extractfile(
        "d0/big").read()  # type: ignore[union-attr]
    assert _trusted(root, tars, digests) == ([True] * 3, [True] * 3, ["marker-1-0", "marker-1-1", "marker-1-2"])
    for d, t in zip(digests, tars, strict=True):  # the blobs stored are the registry's, verified
        assert _digest((root / "content" / "blobs" / "sha256" / d[7:]).read_bytes()) == d
        assert d == _digest(_gzip(t, 2 if t is tars[1] else 1))
    assert _pull(root, f"{proxy.host}/multi") == chain  # all here: reused
    from workbench.cache.store import CacheStore
    from workbench.gc.units import disk_usage

    store = CacheStore(root / "cache.db")
    try:  # remembered from the extraction, so that the GC does not walk the layers again: what du says
        assert {s: store.snapshot_sizes().get(s) for s in chain} == {s: disk_usage(snapshots / s) for s in chain}
    finally:
        store.close()


def test_layers_extract_while_they_download_all_at_once(image_registry: Registry, proxy: Proxy, root: Path,
                                                        tmp_path: Path) -> None:
    """Each layer blob's tail is held back until every layer's first file is extracted: only a pull that
    extracts while downloading, all three layers at once, gets its tails without waiting out the hold."""
    tars = _layers(2)
    digests = _push(image_registry, "held", tars)
    proxy.hold = set(digests)
    proxy.watch = (root / "tmp", [f"marker-2-{n}" for n in range(3)])
    chain = _pull(root, f"{proxy.host}/held")
    assert proxy.timed_out == []
    assert [_tree(root / "snapshots" / s / "fs") for s in chain] == _reference(tars, tmp_path)


def test_layer_lying_about_its_diff_id_poisons_nothing(image_registry: Registry, proxy: Proxy, root: Path,
                                                         tmp_path: Path) -> None:
    """An image whose config claims another image's diff ID for its own (validly digested) layer is refused, and
    the real image's layer is not taken from it later: the diff ID is the cache key of a pulled layer."""
    real = _layers(7)
    evil = _layers(8)
    _push(image_registry, "real", real)
    claimed = [_digest(real[0]), _digest(evil[1]), _digest(evil[2])]  # layer 0 claims to be the real one's
    _push(image_registry, "evil", evil, diff_ids=claimed)
    with pytest.raises(SolveError, match=rf"unpacks to {_digest(evil[0])}, not to the diff ID {claimed[0]}"):
        _pull(root, f"{proxy.host}/evil")
    worker = Worker(root)
    try:
        assert worker.store.lookup(_keys(real)[0]) is None
    finally:
        worker.close()
    assert list((root / "tmp").glob("*/new-*")) == []
    chain = _pull(root, f"{proxy.host}/real")
    assert [_tree(root / "snapshots" / s / "fs") for s in chain] == _reference(real, tmp_path)


@pytest.mark.parametrize("junk", [b"not a tar at all\n" * 200, b"\x28\xb5\x2f\xfd" + b"\xff" * 64])
def test_layer_that_is_not_a_tar_is_a_build_error(image_registry: Registry, proxy: Proxy, root: Path,
                                                  junk: bytes) -> None:
    """A correctly digested blob that is no (compressed) tar, plain or with zstd's magic, is the pull's error,
    naming the image; nothing is kept."""
    repo = f"junk-{len(junk)}"
    tars = [_layers(10)[0], junk]
    digests = _push(image_registry, repo, tars)
    with pytest.raises(SolveError, match=rf"{proxy.host}/{repo}.*not a valid (zstd )?layer"):
        _pull(root, f"{proxy.host}/{repo}")
    assert _trusted(root, tars, digests)[1][1] is False
    assert list((root / "tmp").glob("*/new-*")) == []


def test_a_failed_layer_stops_the_other_downloads(image_registry: Registry, proxy: Proxy, root: Path) -> None:
    """Layer 2 lies about its diff ID while layer 0's tail is held back for 15 s: the pull fails as soon as
    layer 2 is refused, instead of waiting for layer 0 to finish downloading."""
    tars = _layers(9)
    digests = _push(image_registry, "stopped", tars, diff_ids=[_digest(t) for t in tars[:2]] + [_digest(tars[0])])
    proxy.hold = {digests[0]}
    t0 = time.monotonic()
    with pytest.raises(SolveError, match="not to the diff ID"):
        _pull(root, f"{proxy.host}/stopped")
    assert time.monotonic() - t0 < 10
    blobs, chains, markers = _trusted(root, tars, digests)
    assert not blobs[0] and chains == [False, False, False] and markers == []
    # (layer 0's ingest file goes when its pump next hears from the socket, or with a later GC if this process
    # has exited by then: it is never taken for a blob)


@pytest.mark.parametrize("where", ["gzip header", "middle"])
def test_blob_corrupted_on_the_wire_leaves_nothing_trusted(image_registry: Registry, proxy: Proxy, root: Path,
                                                           tmp_path: Path, where: str) -> None:
    tars = _layers(3)
    digests = _push(image_registry, f"bad-{where.replace(' ', '-')}", tars)
    bad = digests[1]
    # a byte of the gzip header's mtime: the layer still extracts in full; in the middle: inflate fails
    proxy.corrupt[bad] = 5 if where == "gzip header" else BIG // 2
    ref = f"{proxy.host}/bad-{where.replace(' ', '-')}"
    with pytest.raises(SolveError, match=rf"blob {bad} of .* failed verification \(digest mismatch\)"):
        _pull(root, ref)
    blobs, chains, markers = _trusted(root, tars, digests)
    assert not blobs[1] and chains[1:] == [False, False]
    assert "marker-3-1" not in markers and "marker-3-2" not in markers
    assert list((root / "content" / "ingest").iterdir()) == []
    assert list((root / "tmp").glob("*/new-*")) == []  # no half-extracted snapshot left either
    proxy.corrupt.clear()
    chain = _pull(root, ref)
    assert [_tree(root / "snapshots" / s / "fs") for s in chain] == _reference(tars, tmp_path)
    assert _trusted(root, tars, digests)[:2] == ([True] * 3, [True] * 3)


def test_streamed_layer_resumes_a_broken_download(image_registry: Registry, proxy: Proxy, root: Path,
                                                 tmp_path: Path) -> None:
    tars = _layers(5)
    digests = _push(image_registry, "cut", tars)
    proxy.cut = {digests[0], digests[1]}
    chain = _pull(root, f"{proxy.host}/cut")
    assert sorted(proxy.ranges) == sorted(f"bytes={size // 2}-" for size in
                                          (len(_gzip(tars[0], 1)), len(_gzip(tars[1], 2))))
    assert [_tree(root / "snapshots" / s / "fs") for s in chain] == _reference(tars, tmp_path)
    assert _trusted(root, tars, digests)[:2] == ([True] * 3, [True] * 3)


_PULL_SCRIPT = """
import sys
import time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.test_pull_concurrent import _pull
_pull(Path(sys.argv[1]), sys.argv[2])
"""


def _markers_under(top: Path) -> set[str]:
    """The layer marker files extracted so far below `top`."""
    return {p.name for p in top.rglob("marker-*")} if top.exists() else set()


def test_interrupted_pull_leaves_nothing_trusted(image_registry: Registry, proxy: Proxy, root: Path,
                                                 tmp_path: Path) -> None:
    tars = _layers(4)
    digests = _push(image_registry, "killed", tars)
    proxy.hold = set(digests)
    ref = f"{proxy.host}/killed"
    repo_root = str(Path(__file__).resolve().parent.parent)
    child = subprocess.Popen([sys.executable, "-c", _PULL_SCRIPT, str(root), ref, repo_root],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proxy.head_sent.wait(30), child.communicate(timeout=5)[0]
        # let it take in what it was sent (and extract what it can) before it dies mid-download; watched here,
        # not through `proxy.watch`, which would also release the tails and let the layers finish before the kill
        markers = {f"marker-4-{n}" for n in range(3)}
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not markers <= _markers_under(root / "tmp"):
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _trusted(root, tars, digests) == ([False] * 3, [False] * 3, [])
    proxy.hold.clear()
    proxy.release.set()
    chain = _pull(root, ref)
    assert [_tree(root / "snapshots" / s / "fs") for s in chain] == _reference(tars, tmp_path)


def test_a_build_downloads_its_base_layers_as_it_extracts_them(image_registry: Registry, proxy: Proxy, root: Path,
                                                               tmp_path: Path) -> None:
    """The frontend's look at a base image (`load metadata`) fetches its manifest and config only; the FROM step
    downloads the layers while it extracts them. Each layer's tail is held back here until every layer's first
    file is extracted: a build that downloaded the whole image first would wait each hold out."""
    from workbench.build import run_build
    from workbench.request import BuildRequest, parse_output

    tars = _layers(9)
    digests = _push(image_registry, "held-build", tars)
    proxy.hold = set(digests)
    proxy.watch = (root / "tmp", [f"marker-9-{n}" for n in range(3)])
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {proxy.host}/held-build\n")
    out = tmp_path / "out"
    run_build(BuildRequest(ctx, ctx / "Dockerfile", outputs=[parse_output(f"type=local,dest={out}")], root=root),
              EventBus())
    assert proxy.timed_out == []
    assert (out / "marker-9-2").read_bytes() == b"m2" and not (out / "d0" / "text").exists()  # the whiteout too
