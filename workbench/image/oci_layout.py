"""`--output type=oci`: a tar of an OCI image layout (oci-layout, index.json, blobs/sha256/...)."""

from __future__ import annotations

import errno
import json
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from workbench.image.config import INDEX, MANIFEST, dumps
from workbench.image.content import ContentStore, CorruptBlob

REF_NAME = "org.opencontainers.image.ref.name"
_INDEX_TYPES = (INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")


def _blobs(store: ContentStore, digest: str, out: list[str]) -> None:
    """`digest` and every blob it refers to (config, layers; children of an index), in order, each once."""
    if digest in out:
        return
    out.append(digest)
    doc = json.loads(store.read(digest))
    if doc.get("mediaType") in _INDEX_TYPES or "manifests" in doc:
        for child in doc.get("manifests") or []:
            if store.has(child["digest"]):  # other platforms' images need not be here
                _blobs(store, child["digest"], out)
        return
    for desc in [doc["config"], *(doc.get("layers") or [])]:
        if desc["digest"] not in out:
            out.append(desc["digest"])


def tar_entry(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    """A reproducible archive member: root-owned, mtime 0, 0644 (0755 for a directory)."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.uid, ti.gid = size, 0, 0, 0
    ti.mode = 0o755 if directory else 0o644
    if directory:
        ti.type = tarfile.DIRTYPE
    return ti


def write_oci_archive(dest: Path, store: ContentStore, manifest_digest: str, ref_name: str | None = None,
                      what: str = "--output type=oci") -> None:
    """Write a tar of an OCI layout holding the image `manifest_digest` (all blobs read from `store`).

    index.json has one descriptor, annotated with `ref_name` as org.opencontainers.image.ref.name if given.
    The tar is written through `atomic_file` (a temp file renamed over `dest`; a symlink at `dest` is
    replaced), so `dest` is never half there. Every blob is verified as it is copied: CorruptBlob (naming
    `ref_name` if given) and nothing written. Deterministic: members have mtime 0, owner 0:0.
    """
    from workbench.fsutil.destination import atomic_file

    dest = Path(dest)
    try:
        manifest_bytes = store.read(manifest_digest)
        manifest = json.loads(manifest_bytes)
        media = manifest.get("mediaType") or (INDEX if "manifests" in manifest else MANIFEST)
        desc: dict[str, Any] = {"mediaType": media, "digest": manifest_digest, "size": len(manifest_bytes)}
        if ref_name:
            desc["annotations"] = {REF_NAME: ref_name}
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [desc]}
        blobs: list[str] = []
        _blobs(store, manifest_digest, blobs)
        for d in blobs:
            if not store.has(d):
                if (corrupt := store.corrupt(d)) is not None:
                    raise corrupt
                raise FileNotFoundError(f"blob {d} of image {ref_name or manifest_digest} is not in the content "
                                        f"store {store.root}")

        with atomic_file(dest, what) as out, ArchiveWriter(out) as tar:
            tar.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            tar.add_bytes("index.json", dumps(index))
            tar.add_dir("blobs/")
            tar.add_dir("blobs/sha256/")
            for d in blobs:
                tar.add_blob(store, d)
    except CorruptBlob as e:
        if ref_name:
            e.for_image(ref_name)
        raise


class ArchiveWriter:
    """A tar onto the open file `out`, byte for byte what `tarfile` writes in PAX format (members as
    `tar_entry` makes them), with blobs of the content store copied in the kernel where the store wrote them
    itself (see `add_blob`). `close` ends the archive; `out` stays open."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.offset = out, 0

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()

    def _put(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def _header(self, info: tarfile.TarInfo) -> None:
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self) -> None:
        if rest := self.offset % tarfile.BLOCKSIZE:
            self._put(tarfile.NUL * (tarfile.BLOCKSIZE - rest))

    def add_bytes(self, name: str, data: bytes) -> None:
        """A regular file `name` holding `data`."""
        self._header(tar_entry(name, len(data)))
        self._put(data)
        self._pad()

    def add_dir(self, name: str) -> None:
        """A directory entry `name` (ending in /)."""
        self._header(tar_entry(name, directory=True))

    def add_blob(self, store: ContentStore, digest: str) -> None:
        """The blob `digest` as blobs/sha256/<hex>. A blob this store object wrote (and hashed) itself is copied
        by the kernel, page cache to file; any other is read, verified as it is copied (CorruptBlob)."""
        with store.open(digest) as f:
            self._header(tar_entry("blobs/sha256/" + digest.split(":", 1)[1], f.size))
            if not (store.written_here(digest, f.fileno()) and self._kernel_copy(f.fileno(), f.size)):
                left = f.size
                while left and (chunk := f.read(min(left, 1 << 20))):
                    self._put(chunk)
                    left -= len(chunk)
                if left:
                    raise OSError(f"blob {digest} in {store.root} ended {left} bytes short of its size")
            else:
                f.verified = True
        self._pad()

    def _kernel_copy(self, fd: int, size: int) -> bool:
        """`size` bytes of `fd` from its start onto `out` by sendfile; False, having written nothing, where
        the kernel cannot (then the caller copies)."""
        self.out.flush()
        out, done = self.out.fileno(), 0
        while done < size:
            try:
                n = os.sendfile(out, fd, done, size - done)
            except OSError as e:
                if done == 0 and e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    return False
                raise
            if n == 0:
                raise OSError(f"blob file ended {size - done} bytes short of its size")
            done += n
        self.offset += size
        return True

    def close(self) -> None:
        """The end of the archive: two zero blocks, then zeros to a whole record, as tarfile ends it."""
        self._put(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if rest := self.offset % tarfile.RECORDSIZE:
            self._put(tarfile.NUL * (tarfile.RECORDSIZE - rest))
