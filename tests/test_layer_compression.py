"""Layer compression: parallel gzip / zstd that give the same bytes whatever the thread count, layers of one
export compressed side by side, and buildx's compression-level / force-compression output options."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb
from workbench.cache.store import LayerBlob
from workbench.image.assemble import build_image
from workbench.snapshot.layers import write_layer
from workbench.worker import Worker

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def _fill(root: Path, seed: int) -> None:
    """A few MiB of text-like and random files: several gzip pieces, and more than one zstd job."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnop _\n", k=rng.randint(2, 9))) for _ in range(500)]
    for d in range(4):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(12):
            (sub / f"t{f}.txt").write_bytes(b" ".join(rng.choices(words, k=20_000)))
        (sub / "blob.bin").write_bytes(rng.randbytes(300_000))
    os.symlink("d0/t0.txt", root / "link")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    _fill(root, 1)
    return root


def _decoded(tool: str, blob: bytes) -> bytes:
    return subprocess.run([tool, "-dc"], input=blob, capture_output=True, check=True).stdout


@pytest.mark.parametrize(("kind", "level"), [("gzip", None), ("zstd", None), ("zstd", 1)])  # zstd 1: several jobs
def test_same_bytes_whatever_the_thread_count(tree: Path, kind: str, level: int | None) -> None:
    from workbench.fsutil.compress import CHUNK

    blobs = []
    for threads in (1, 4):
        out = io.BytesIO()
        diff_id, digest, size = write_layer(tree, out, kind, level, threads=threads)
        blob = out.getvalue()
        assert digest == "sha256:" + hashlib.sha256(blob).hexdigest() and size == len(blob)
        tar = _decoded(kind, blob)  # any tool reads it
        assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert len(tar) > 4 * CHUNK
        names = tarfile.open(fileobj=io.BytesIO(tar)).getnames()
        assert "d3/blob.bin" in names and "link" in names
        blobs.append(blob)
    assert blobs[0] == blobs[1]
    out = io.BytesIO()
    assert write_layer(tree, out, "none")[0] == diff_id  # the same tar, uncompressed


def _members(blob: bytes) -> list[tuple[bytes, bytes]]:
    """(header, content) of each gzip member of `blob`, read one member at a time."""
    members = []
    while blob:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        content = inflate.decompress(blob)
        assert inflate.eof, "a member ends before its end-of-stream marker"
        members.append((blob[:10], content))
        blob = inflate.unused_data
    return members


def test_gzip_levels_and_members(tree: Path) -> None:
    """One gzip member per CHUNK of the tar, each with the level's XFL; gzip reads them as one stream."""
    from workbench.fsutil.compress import CHUNK

    sizes = {}
    for level in (1, 9):
        out = io.BytesIO()
        diff_id, _, sizes[level] = write_layer(tree, out, "gzip", level)
        blob = out.getvalue()
        tar = _decoded("gzip", blob)
        assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
        members = _members(blob)
        assert b"".join(content for _, content in members) == tar
        assert len(members) == -(-len(tar) // CHUNK) > 4
        assert all(len(content) == CHUNK for _, content in members[:-1])
        assert {header for header, _ in members} == {b"\x1f\x8b\x08\x00\0\0\0\0" + bytes((4 if level == 1 else 2, 255))}
    assert sizes[9] < sizes[1]
    with pytest.raises(ValueError, match="level 10"):
        write_layer(tree, io.BytesIO(), "gzip", 10)


@pytest.mark.parametrize("size", [0, 1, 1 << 20, 2 << 20, (2 << 20) + 5])
def test_gzip_member_boundaries(size: int) -> None:
    """Any input, however it is written, gives members of exactly CHUNK bytes and a shorter last one; an empty
    input is one empty member (still a valid gzip file)."""
    from workbench.fsutil.compress import CHUNK, ParallelGzipWriter

    assert CHUNK == 1 << 20  # the sizes above are around it
    data = bytes(i % 251 for i in range(size))
    blobs = []
    for step in (size or 1, 4096, 700_001):
        out = io.BytesIO()
        with ParallelGzipWriter(out, 6, threads=3) as gz:
            for i in range(0, len(data), step):
                gz.write(data[i:i + step])
        blobs.append(out.getvalue())
    assert blobs[0] == blobs[1] == blobs[2]
    contents = [content for _, content in _members(blobs[0])]
    assert b"".join(contents) == data and gzip.decompress(blobs[0]) == data
    assert [len(c) for c in contents] == ([CHUNK] * (size // CHUNK) + ([size % CHUNK] if size % CHUNK else [])
                                          or [0])


def test_pieces_that_do_not_compress_are_stored() -> None:
    """A 1 MiB piece of random bytes is stored (deflate's level 0, no time spent searching for matches); a piece
    with anything compressible in it is deflated at the asked level."""
    from workbench.fsutil.compress import CHUNK, ParallelGzipWriter
    from workbench.fsutil.deflate import deflate_whole  # the writer's deflate: its stored blocks

    rnd = random.Random(7)
    noise = rnd.randbytes(CHUNK)
    text = b"".join(b"line %d of some source text\n" % i for i in range(CHUNK // 24))[:CHUNK]
    mixed = noise[: CHUNK // 2] + text[: CHUNK // 2]
    data = noise + text + mixed + b"tail"
    out = io.BytesIO()
    with ParallelGzipWriter(out, 6, threads=2) as gz:
        gz.write(data)
    blob = out.getvalue()
    assert gzip.decompress(blob) == data
    stored = bytes(deflate_whole(noise, 0))
    assert blob[10:10 + len(stored)] == stored  # the random piece, as level 0 writes it
    assert len(stored) < CHUNK * 1.001
    sizes = [len(content) for _, content in _members(blob)]
    assert sizes == [CHUNK, CHUNK, CHUNK, 4]
    assert len(blob) < len(noise) + len(mixed) // 2 + len(text) // 4  # the others are real deflate: they shrink


@pytest.fixture()
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = Worker(tmp_path / "root")
    yield w
    w.close()


def _snapshot(w: Worker, seed: int) -> str:
    snapshot = f"snap{seed}"
    _fill(w.snapshots.path(snapshot), seed)
    return snapshot


def _layers(w: Worker, manifest: str) -> list[dict[str, object]]:
    return list(json.loads(w.content.read(manifest))["layers"])


def test_layers_of_one_export_written_side_by_side(worker: Worker) -> None:
    chain = [_snapshot(worker, s) for s in (1, 2, 3)]
    manifest = build_image(chain, {"architecture": "amd64", "os": "linux"}, worker.store, worker.snapshots,
                           worker.content)
    doc = json.loads(worker.content.read(manifest))
    config = json.loads(worker.content.read(doc["config"]["digest"]))
    for snapshot, layer, diff_id in zip(chain, doc["layers"], config["rootfs"]["diff_ids"], strict=True):
        expected = io.BytesIO()
        assert write_layer(worker.snapshots.path(snapshot), expected, "gzip")[:2] == (diff_id, layer["digest"])
        assert worker.content.read(layer["digest"]) == expected.getvalue()
        assert worker.store.layer_blob(snapshot) == LayerBlob(diff_id, layer["digest"], layer["size"], GZIP)
    again = build_image(chain, {"architecture": "amd64", "os": "linux", "created": config["created"]},
                        worker.store, worker.snapshots, worker.content)
    assert again == manifest


def test_force_compression_recompresses_remembered_layers(worker: Worker) -> None:
    """As BuildKit: without force-compression a layer that has a blob keeps it (a pulled gzip base stays gzip in
    a zstd export); with it, every layer of another compression is compressed again. New layers take the
    asked compression and level either way."""
    from workbench.image.assemble import Compression

    base, new = _snapshot(worker, 1), _snapshot(worker, 2)
    with worker.content.writer() as w:
        diff_id, digest, size = write_layer(worker.snapshots.path(base), w, "gzip")
    worker.store.record_layer_blob(base, LayerBlob(diff_id, digest, size, GZIP))
    image = {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z"}

    def export(comp: Compression) -> list[dict[str, object]]:
        return _layers(worker, build_image([base, new], image, worker.store, worker.snapshots, worker.content,
                                           comp))

    kept = export(Compression("zstd", 19))
    assert [x["mediaType"] for x in kept] == [GZIP, ZSTD] and kept[0]["digest"] == digest
    fresh = io.BytesIO()
    assert write_layer(worker.snapshots.path(new), fresh, "zstd", 19)[1] == kept[1]["digest"]
    forced = export(Compression("zstd", force=True))
    assert [x["mediaType"] for x in forced] == [ZSTD, ZSTD]
    tar = _decoded("zstd", worker.content.read(str(forced[0]["digest"])))
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
    assert worker.store.layer_blob(base) == LayerBlob(diff_id, digest, size, GZIP)  # the record stays gzip
    assert export(Compression("gzip", force=True))[0]["digest"] == digest


def test_blobs_of_every_compression_are_remembered(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zstd export remembers its blob as a gzip one is: the next zstd export of the layer compresses nothing,
    a gzip export between them does not replace it, and the cache's disk usage counts it with its snapshot
    (not as an orphan blob a prune would delete)."""
    from workbench.gc.usage import scan
    from workbench.image import assemble
    from workbench.image.assemble import Compression

    layer = _snapshot(worker, 1)
    worker.store.record("step", [layer], "a step")
    image = {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z"}
    written: list[str] = []
    real_write = assemble._write

    def counting(snapshot: str, *args: object) -> LayerBlob:
        written.append(snapshot)
        return real_write(snapshot, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(assemble, "_write", counting)

    def export(comp: Compression) -> dict[str, object]:
        return _layers(worker, build_image([layer], image, worker.store, worker.snapshots, worker.content,
                                           comp))[0]

    zstd = export(Compression("zstd"))
    assert zstd["mediaType"] == ZSTD and written == [layer]
    assert export(Compression("zstd")) == zstd and written == [layer]
    gzip_layer = export(Compression("gzip", force=True))
    assert gzip_layer["mediaType"] == GZIP and written == [layer, layer]
    assert export(Compression("zstd")) == zstd and export(Compression("gzip")) == gzip_layer
    assert written == [layer, layer]
    assert export(Compression("uncompressed", force=True))["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert export(Compression("zstd", force=True)) == zstd and len(written) == 3
    usage = scan(worker.root, worker.store, exclusive=True)
    assert str(zstd["digest"]) not in usage.orphans.blobs and str(gzip_layer["digest"]) not in usage.orphans.blobs
    worker.store.forget(["step"], [layer])
    assert worker.store.layer_blob_variants() == []


def test_a_failed_layer_stops_the_export(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """When one layer of an export fails, the layers not yet started are not compressed, and those that were
    finished are remembered (the next export reuses them)."""
    import threading
    import time

    from workbench.image import assemble

    chain = [_snapshot(worker, s) for s in range(1, 7)]
    started: list[str] = []
    lock = threading.Lock()
    real_write = assemble._write

    def write(snapshot: str, *args: object) -> LayerBlob:
        with lock:
            started.append(snapshot)
        if snapshot == chain[0]:
            time.sleep(0.1)
            raise OSError(28, "No space left on device")
        time.sleep(1.0)
        return real_write(snapshot, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(assemble, "_write", write)
    with pytest.raises(OSError, match="No space left"):
        build_image(chain, {"architecture": "amd64", "os": "linux"}, worker.store, worker.snapshots,
                    worker.content)
    assert chain[5] not in started  # queued behind the four running ones: cancelled
    assert all(worker.store.layer_blob(s) is not None for s in started if s != chain[0])


# --- the --output options, end to end --------------------------------------------------------------------------


def _oci_layers(archive: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(archive) as t:
        def blob(digest: str) -> bytes:
            f = t.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert f is not None
            return f.read()

        index = json.loads(blob(json.loads(t.extractfile("index.json").read())["manifests"][0]["digest"]))  # type: ignore[union-attr]
        return [(layer["mediaType"], blob(layer["digest"])) for layer in index["layers"]]


def test_output_compression_options(registry: str, tmp_path: Path, root: Path) -> None:
    ctx = tmp_path / "ctx"
    _fill(ctx / "tree", 4)
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY tree /tree\n")
    out = tmp_path / "zstd.tar"
    wb(str(ctx), "--output", f"type=oci,dest={out},compression=zstd,compression-level=12", root=root)
    (base_type, _), (new_type, new_blob) = _oci_layers(out)
    assert (base_type, new_type) == (GZIP, ZSTD)  # the pulled base keeps its compression, as BuildKit
    assert b"d3/blob.bin" in _decoded("zstd", new_blob)
    wb(str(ctx), "--output", f"type=oci,dest={out},compression=zstd,force-compression=true", root=root)
    assert [t for t, _ in _oci_layers(out)] == [ZSTD, ZSTD]
    for bad, says in (("compression-level=10", "compression-level='10' is not a gzip level (0-9)"),
                      ("compression=zstd,compression-level=0", "compression-level='0' is not a zstd level (1-22)"),
                      ("compression-level=fast", "compression-level='fast'"),
                      ("force-compression=maybe", "force-compression='maybe'")):
        proc = wb(str(ctx), "--output", f"type=oci,dest={out},{bad}", root=root, check=False)
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-2000:]


def test_image_import_writes_one_gzip_stream(tmp_path: Path, root: Path) -> None:
    src = tmp_path / "rootfs"
    _fill(src, 5)
    plain = tmp_path / "rootfs.tar"
    with tarfile.open(plain, "w") as t:
        t.add(src, ".")
    proc = subprocess.run(WORKBENCH + ["image", "import", "--root", str(root), str(plain), "imported:1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from workbench.image.store import ImageStore

    worker = Worker(root)
    try:
        images = ImageStore.for_content(worker.content)
        manifest = json.loads(worker.content.read(images.resolve("imported:1").digest))
        layer = manifest["layers"][0]
        assert layer["mediaType"] == GZIP
        blob = worker.content.read(layer["digest"])
        assert _decoded("gzip", blob) == plain.read_bytes()
        config = json.loads(worker.content.read(manifest["config"]["digest"]))
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(plain.read_bytes()).hexdigest()]
    finally:
        worker.close()
        shutil.rmtree(src)
