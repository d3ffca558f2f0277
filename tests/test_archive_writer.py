"""Writing image archives: the tar bytes, blobs copied by the kernel only where the store vouches for them, and
the replaced archive's cached pages given back at the start of a build."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from workbench.fsutil.compress import write_compressed
from workbench.fsutil.destination import release_cached_pages
from workbench.image.config import LAYER_GZIP, build_manifest, new_image
from workbench.image.content import ContentStore, CorruptBlob
from workbench.image.oci_layout import ArchiveWriter, tar_entry, write_oci_archive

needs_fincore = pytest.mark.skipif(shutil.which("fincore") is None, reason="needs fincore (util-linux)")


def _blob(store: ContentStore, data: bytes) -> str:
    with store.writer() as w:
        w.write(data)
    return w.digest


def _one_layer_image(store: ContentStore, size: int) -> tuple[str, str]:
    """(manifest digest, layer digest) of an image whose one "layer" is `size` random bytes, all written here."""
    layer = _blob(store, os.urandom(size))
    image = new_image(None)
    image["rootfs"]["diff_ids"].append(layer)
    return build_manifest(store, image, [{"mediaType": LAYER_GZIP, "digest": layer, "size": size}]), layer


def _tarfile_bytes(entries: list[tuple[str, bytes | None]]) -> bytes:
    """What tarfile (PAX) writes for the same members: the reference."""
    out = io.BytesIO()
    with tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            if data is None:
                tar.addfile(tar_entry(name, directory=True))
            else:
                tar.addfile(tar_entry(name, len(data)), io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("fresh", [True, False], ids=["written-here", "verified"])
def test_archive_bytes_are_tarfiles(tmp_path: Path, fresh: bool) -> None:
    store = ContentStore(tmp_path / "store")
    blobs = [os.urandom(3 * 512 + 17), b"", os.urandom(2 << 20)]
    digests = [_blob(store, b) for b in blobs]
    if not fresh:
        store = ContentStore(tmp_path / "store")  # another process's store object: nothing written here
    for d in digests:
        with store.open(d) as f:
            assert store.written_here(d, f.fileno()) is fresh
    dest = tmp_path / "out.tar"
    with open(dest, "wb") as f, ArchiveWriter(f) as tar:
        tar.add_bytes("oci-layout", b"{}")
        tar.add_dir("blobs/")
        for d in digests:
            tar.add_blob(store, d)
    expected = [("oci-layout", b"{}"), ("blobs/", None)]
    expected += [("blobs/sha256/" + d.split(":", 1)[1], b) for d, b in zip(digests, blobs, strict=True)]
    assert dest.read_bytes() == _tarfile_bytes(expected)


def test_blob_changed_after_it_was_written_is_verified_again(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    manifest, layer = _one_layer_image(store, 1 << 20)
    path = store.path(layer)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))  # same size, another mtime: no longer the file the store hashed
    with pytest.raises(CorruptBlob, match=layer):
        write_oci_archive(tmp_path / "out.tar", store, manifest)
    assert not (tmp_path / "out.tar").exists() and not store.has(layer)


def test_archive_into_a_pipe(tmp_path: Path) -> None:
    """A stream destination gets the same bytes when the blobs are copied by the kernel (sendfile to a pipe)."""
    store = ContentStore(tmp_path / "store")
    manifest, _ = _one_layer_image(store, 3 << 20)
    write_oci_archive(tmp_path / "file.tar", store, manifest)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = bytearray()

    def read() -> None:
        with open(fifo, "rb") as f:
            got.extend(f.read())

    reader = threading.Thread(target=read)
    reader.start()
    write_oci_archive(fifo, store, manifest)
    reader.join(30)
    assert bytes(got) == (tmp_path / "file.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(bytes(got))) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert index["manifests"][0]["digest"] == manifest


def test_write_compressed_leaves_the_digest_to_a_hashing_output(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = os.urandom(1 << 16) * 40
    with store.writer() as w:
        diff_id, digest, size = write_compressed(lambda out: out.write(data), w, "gzip", digest_out=False)
    assert digest == "" and size == w.size == store.size(w.digest)
    assert write_compressed(lambda out: out.write(data), io.BytesIO(), "gzip") == (diff_id, w.digest, size)


def _resident(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@needs_fincore
def test_release_cached_pages(tmp_path: Path) -> None:
    old = tmp_path / "old.tar"
    old.write_bytes(os.urandom(4 << 20))
    os.sync()
    old.read_bytes()
    target = tmp_path / "target"
    target.write_bytes(os.urandom(4 << 20))
    os.sync()
    target.read_bytes()
    link = tmp_path / "link.tar"
    link.symlink_to(target)
    if _resident(old) == 0 or _resident(target) == 0:
        pytest.skip("this filesystem keeps no page cache to give back")
    release_cached_pages(old)
    assert _resident(old) == 0 and old.stat().st_size == 4 << 20  # the content stays
    release_cached_pages(link)  # a link at the destination is replaced, never followed
    assert _resident(target) > 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    release_cached_pages(fifo)  # not opened: a writer waiting for a reader would be let through
    release_cached_pages(tmp_path / "absent.tar")
