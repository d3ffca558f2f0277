"""Layer tars ⇄ snapshot dirs in overlayfs lower format.

Extraction is `fsutil.tar.extract` with whiteouts (never writes outside the snapshot dir); writing walks a
snapshot dir into a deterministic OCI layer tar.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import IO, BinaryIO, cast

from workbench.fsutil.tar import OPAQUE, OPAQUE_XATTR, OVERLAY_XATTRS, WHITEOUT_PREFIX, XATTR_PAX, extract


def extract_layer(
    stream: BinaryIO, dest: Path, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"
) -> None:
    """Extract a (gzip/zstd/plain) layer tar into `dest` as an overlay lower dir, streaming.

    `.wh.NAME` becomes a 0:0 char device, `.wh..wh..opq` the opaque xattr on its dir. Members are
    placed with `dest` as "/"; a member that would reach outside raises `UnsafePathError`.
    """
    dest.mkdir(parents=True, exist_ok=True)
    extract(stream, dest, whiteouts=True, media_type=media_type)


# --- writing ---------------------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """Pass-through writer that hashes and counts what goes through it."""

    def __init__(self, out: IO[bytes] | None) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha.update(b)
        n = memoryview(b).nbytes
        self.size += n
        if self.out is not None:
            self.out.write(b)
        return n


def _walk(root: Path) -> list[tuple[str, str, os.stat_result | None]]:
    """(tar name, host path, lstat) of everything under `root`, parents first, siblings sorted by tar name.

    A whiteout is named `.wh.NAME` here already, and an opaque dir's `.wh..wh..opq` marker is a child
    entry with no host path or stat.
    """
    out: list[tuple[str, str, os.stat_result | None]] = []

    def visit(rel: str, host: str) -> None:
        children: list[tuple[bytes, str, str, os.stat_result | None]] = []
        if rel and _is_opaque(host):
            children.append((os.fsencode(OPAQUE), OPAQUE, host, None))
        with os.scandir(host) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                name = WHITEOUT_PREFIX + e.name if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 else e.name
                children.append((os.fsencode(name), name, e.path, st))
        children.sort(key=lambda c: c[0])
        for _, name, path, child_st in children:
            child = f"{rel}/{name}" if rel else name
            out.append((child, path, child_st))
            if child_st is not None and stat.S_ISDIR(child_st.st_mode):
                visit(child, path)

    visit("", str(root))
    return out


def _is_opaque(host: str) -> bool:
    try:
        return os.getxattr(host, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _xattr_headers(host: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        keys = os.listxattr(host, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return headers
        raise
    for key in sorted(keys):
        if key.startswith(OVERLAY_XATTRS):
            continue
        value = os.getxattr(host, key, follow_symlinks=False)
        headers[XATTR_PAX + key] = value.decode("utf-8", "surrogateescape")
    return headers


def write_layer(layer_dir: Path, out: BinaryIO, compress: str = "gzip", compresslevel: int = 6) -> tuple[str, str, int]:
    """Write the overlay-format `layer_dir` to `out` as an OCI layer tar, deterministically.

    `compress` is "gzip", "zstd" or "none". Returns (diff_id, digest, compressed size), digests as
    "sha256:<hex>" of the tar and of the bytes written.
    """
    blob = _HashingWriter(out)
    compressor: IO[bytes] | None
    if compress == "gzip":
        gz = gzip.GzipFile(filename="", fileobj=blob, mode="wb", compresslevel=compresslevel, mtime=0)
        compressor = cast(IO[bytes], gz)
    elif compress == "zstd":
        import zstandard

        zstd = zstandard.ZstdCompressor(level=3)
        compressor = cast(IO[bytes], zstd.stream_writer(cast(IO[bytes], blob), closefd=False))
    elif compress in ("none", "", "uncompressed"):
        compressor = None
    else:
        raise ValueError(f"unknown layer compression {compress!r}")
    tar_stream = _HashingWriter(compressor if compressor is not None else cast(IO[bytes], blob))
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, host, st in _walk(layer_dir):
            _write_entry(tar, name, host, st, links)
    if compressor is not None:
        compressor.close()  # writes the gzip trailer / zstd frame end; `out` stays open
    return "sha256:" + tar_stream.sha.hexdigest(), "sha256:" + blob.sha.hexdigest(), blob.size


def _write_entry(
    tar: tarfile.TarFile, rel: str, host: str, st: os.stat_result | None, links: dict[tuple[int, int], str]
) -> None:
    if st is None or (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
        # Opaque marker, or an overlay whiteout (shared inodes, but never written as a hardlink).
        wh = tarfile.TarInfo(rel)
        wh.mode, wh.mtime = 0, int(os.lstat(host).st_mtime if st is None else st.st_mtime)
        tar.addfile(wh)
        return
    fmt = stat.S_IFMT(st.st_mode)
    mtime = int(st.st_mtime)
    if fmt == stat.S_IFSOCK:  # sockets are not image content
        return
    ti = tarfile.TarInfo(rel)
    ti.mode, ti.uid, ti.gid, ti.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime
    ti.uname = ti.gname = ""
    ti.pax_headers = _xattr_headers(host)
    if fmt != stat.S_IFDIR and st.st_nlink > 1:
        first = links.setdefault((st.st_dev, st.st_ino), rel)
        if first != rel:
            ti.type, ti.linkname = tarfile.LNKTYPE, first
            tar.addfile(ti)
            return
    if fmt == stat.S_IFREG:
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
        with open(host, "rb") as f:
            tar.addfile(ti, f)
        return
    if fmt == stat.S_IFDIR:
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
        return
    if fmt == stat.S_IFLNK:
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(host)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        ti.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif fmt == stat.S_IFIFO:
        ti.type = tarfile.FIFOTYPE
    else:
        return
    tar.addfile(ti)
