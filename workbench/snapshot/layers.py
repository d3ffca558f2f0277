"""Layer tars ⇄ snapshot dirs in overlayfs lower format.

Extraction is `fsutil.tar.extract` with whiteouts (never writes outside the snapshot dir); writing walks a
snapshot dir into a deterministic OCI layer tar.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO, NamedTuple, cast

from workbench.fsutil.chunks import ChunkReader
from workbench.fsutil.compress import write_compressed
from workbench.fsutil.deflate import ERRORS as ZLIB_ERRORS
from workbench.fsutil.deflate import zlib
from workbench.fsutil.tar import OPAQUE, WHITEOUT_PREFIX, XATTR_PAX, extract, is_opaque, overlay_xattrs, sniff


class LayerContentError(Exception):
    """A layer that cannot be trusted: not a valid (compressed) tar, or not the tar its diff ID names."""


class LayerExtractionStopped(Exception):
    """The extraction was told to stop (another layer failed, or the build was interrupted)."""


class Extracted(NamedTuple):
    """What `extract_layer` made: the layer's diff ID, and the bytes allocated to `dest` and below."""

    diff_id: str
    allocated: int


def extract_layer(
    stream: BinaryIO, dest: Path, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip",
    stop: threading.Event | None = None,
) -> Extracted:
    """Extract a (gzip/zstd/plain, by its magic bytes or a zstd media type) layer tar into `dest` as an overlay
    lower dir, streaming; returns its diff ID, the sha256 of the whole uncompressed tar (read to its end), and
    the disk space it took (`fsutil.tar.extract`'s count, so that nothing walks the new tree again to measure it).

    `.wh.NAME` becomes a 0:0 char device, `.wh..wh..opq` the opaque xattr on its dir. Members are
    placed with `dest` as "/"; a member that would reach outside raises `UnsafePathError`. Bytes that do not
    decompress or are not a tar raise `LayerContentError`; `stop`, once set, `LayerExtractionStopped`.
    """
    dest.mkdir(parents=True, exist_ok=True)
    hashed = _Hashed(layer_tar(stream, media_type), stop)
    ahead = _ReadAhead(cast(IO[bytes], hashed))
    try:
        allocated = extract(cast(IO[bytes], ahead), dest, whiteouts=True, compressed=False)
        ahead.drain()  # the tar's padding after its end blocks is part of the diff ID
    except (LayerExtractionStopped, OSError):
        raise
    except _NOT_A_TAR as e:
        raise LayerContentError(f"not a valid layer tar: {e}") from None
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise LayerContentError(f"not a valid zstd layer: {e}") from None
        raise
    finally:
        ahead.close()
    return Extracted("sha256:" + hashed.sha.hexdigest(), allocated)


class _ReadAhead(ChunkReader):
    """`stream` read by a thread of its own, up to `_AHEAD` chunks ahead of the reader: the layer's bytes are
    read, checked, inflated and hashed (zlib and sha256 let go of the GIL) while the reader makes the files.
    An error of the stream reaches the reader at the point it occurred; `close` stops the thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(_AHEAD)
        self.stream = stream
        self.thread = threading.Thread(target=self._pump, name="layer-read", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while not self.canceled.is_set():
            item: bytes | BaseException | None
            try:
                item = self.stream.read(_CHUNK) or None
            except BaseException as e:  # noqa: BLE001 - handed to the reader, raised there
                item = e
            if not self._put(item) or not isinstance(item, bytes):
                return

    def drain(self) -> None:
        """Read to the end (the stream has then been read and hashed whole)."""
        buffer = bytearray(_CHUNK)
        while self.readinto(buffer):
            pass
        self.thread.join()

    def close(self) -> None:
        """Stop the thread; after a failure it may be waiting for bytes still downloading: it is given
        `_STOP_WAIT` seconds, then left to end at its next read (of a blob its owner has closed by then)."""
        self.canceled.set()
        self.thread.join(_STOP_WAIT)
        super().close()


class _Hashed(io.RawIOBase):
    """A read-only stream hashing what passes through; `stop`, once set, ends it with LayerExtractionStopped."""

    def __init__(self, stream: IO[bytes], stop: threading.Event | None) -> None:
        super().__init__()
        self.stream, self.stop, self.sha = stream, stop, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.stop is not None and self.stop.is_set():
            raise LayerExtractionStopped("stopped")
        data = self.stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha.update(data)
        return n


_CHUNK = 1 << 20
_AHEAD = 4
_STOP_WAIT = 5.0
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_NOT_A_TAR: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, *ZLIB_ERRORS)


def layer_tar(stream: IO[bytes], media_type: str = "") -> IO[bytes]:
    """The tar inside a layer stream: zstd (by its magic bytes, or a zstd `media_type` that is not gzip), gzip of
    any number of members, or a plain tar as is."""
    head, raw = sniff(stream, 4)
    if head.startswith(_ZSTD_MAGIC) or ("zstd" in media_type and not head.startswith(_GZIP_MAGIC)):
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return io.BufferedReader(_Gunzipped(raw), _CHUNK)


class _Gunzipped(io.RawIOBase):
    """A layer stream decompressed here if it is gzip (one member or several, as parallel compressors write
    them; zero padding between them allowed), else passed on as is.

    zlib inflates 1 MiB at a time and checks each member's CRC and length itself: `gzip.GzipFile` reads
    8 KiB at a time, and its per-call overhead was a third of a big layer's extraction.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.out = memoryview(b"")
        self.gzip: bool | None = None  # known after the first read
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.out:
            if not self._more():
                return 0
        n = min(len(buffer), len(self.out))
        buffer[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def _more(self) -> bool:
        """Fill `out`; False at the end."""
        if self.gzip is None:
            head = self.stream.read(_CHUNK)
            while 0 < len(head) < 2 and (more := self.stream.read(_CHUNK)):
                head += more
            self.gzip = head.startswith(_GZIP_MAGIC)
            data = head
            if not self.gzip:
                self.out = memoryview(head)
                return bool(head)
        elif not self.gzip:
            self.out = memoryview(self.stream.read(_CHUNK))
            return bool(self.out)
        elif self.inflate.eof:  # another member may follow, after zero padding
            data = self.inflate.unused_data.lstrip(b"\0")
            while not data:
                more = self.stream.read(_CHUNK)
                if not more:
                    return False
                data = more.lstrip(b"\0")
            self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            data = self.inflate.unconsumed_tail or self.stream.read(_CHUNK)
            if not data:
                raise EOFError("the layer's gzip stream ends before its end-of-stream marker")
        self.out = memoryview(self.inflate.decompress(data, _CHUNK))
        return True


# --- writing ---------------------------------------------------------------------------------------


def _walk(root: Path) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """(tar name, host path, lstat) of everything under `root`, parents first, siblings sorted by tar name.

    A whiteout is named `.wh.NAME` here already, and an opaque dir's `.wh..wh..opq` marker is a child
    entry with no host path or stat. Lazily: only the dirs on the way to the current entry are listed in
    memory (a list of a million-file layer's entries was ~1 KB each).
    """

    def visit(rel: str, host: str) -> Iterator[tuple[str, str, os.stat_result | None]]:
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
            yield child, path, child_st
            if child_st is not None and stat.S_ISDIR(child_st.st_mode):
                yield from visit(child, path)

    yield from visit("", str(root))


def _is_opaque(host: str) -> bool:
    return is_opaque(host)  # trusted.overlay.opaque, or also user.overlay.opaque when rootless


def _xattr_headers(host: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        keys = os.listxattr(host, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return headers
        raise
    private = overlay_xattrs()
    for key in sorted(keys):
        if key.startswith(private):
            continue
        value = os.getxattr(host, key, follow_symlinks=False)
        headers[XATTR_PAX + key] = value.decode("utf-8", "surrogateescape")
    return headers


def write_layer(layer_dir: Path, out: BinaryIO, compress: str = "gzip", compresslevel: int | None = None,
                threads: int | None = None, digest_out: bool = True) -> tuple[str, str, int]:
    """Write the overlay-format `layer_dir` to `out` as an OCI layer tar, deterministically, in one streaming pass.

    `compress` is "gzip", "zstd" or "none" ("uncompressed"), at `compresslevel` (None: BuildKit's default) on
    `threads` threads (None: every core; the bytes do not depend on it). Returns (diff_id, digest,
    compressed size), digests as "sha256:<hex>" of the tar and of the bytes written (that one "" with
    `digest_out=False`, for an `out` that hashes itself, as a content store's writer does).
    """
    return write_compressed(lambda stream: _write_tree(stream, layer_dir), out, compress, compresslevel, threads,
                            digest_out)


def _write_tree(stream: IO[bytes], layer_dir: Path) -> None:
    links: dict[tuple[int, int], str] = {}
    tar = _TarStream(stream)
    for name, host, st in _walk(layer_dir):
        _write_entry(tar, name, host, st, links)
    tar.close()


class _TarStream:
    """A write-only PAX tar onto `stream`, byte for byte what `tarfile.TarFile(format=PAX_FORMAT)` writes.

    An entry that needs no pax record (ASCII names up to 100 bytes, no xattrs, numbers in range: nearly every
    one) gets its ustar header built here, a few times faster than `TarInfo.tobuf` (a third of the tar's CPU
    on a layer of small files); any other goes through `tobuf`. File data goes out in 1 MiB reads.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.offset = stream, 0

    def add(self, ti: tarfile.TarInfo, data: IO[bytes] | None = None) -> None:
        header = _ustar_header(ti)
        if header is None:
            header = ti.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        self.stream.write(header)
        self.offset += len(header)
        if data is None:
            return
        left = ti.size
        while left > 0:
            chunk = data.read(min(left, _CHUNK))
            if not chunk:
                raise OSError(f"{ti.name}: the file got shorter while it was written to the layer")
            self.stream.write(chunk)
            left -= len(chunk)
        pad = -ti.size % tarfile.BLOCKSIZE
        if pad:
            self.stream.write(bytes(pad))
        self.offset += ti.size + pad

    def close(self) -> None:
        """The two zero blocks that end a tar, then zeros to a whole record, as `TarFile.close` writes them."""
        self.offset += 2 * tarfile.BLOCKSIZE
        self.stream.write(bytes(2 * tarfile.BLOCKSIZE + -self.offset % tarfile.RECORDSIZE))


_NUMBER_LIMITS = (8 ** 7, 8 ** 7, 8 ** 11, 8 ** 11)  # uid, gid, size, mtime: beyond, tarfile adds a pax record
_USTAR_TAIL = tarfile.POSIX_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)  # magic, uname, gname, devs, prefix, pad


def _ustar_header(ti: tarfile.TarInfo) -> bytes | None:
    """`ti`'s header as tarfile's PAX format writes it when it needs no pax record; None when it would."""
    if ti.pax_headers or ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE) or ti.uname or ti.gname:
        return None
    name = ti.name + "/" if ti.type == tarfile.DIRTYPE and not ti.name.endswith("/") else ti.name
    if not (name.isascii() and ti.linkname.isascii() and len(name) <= 100 and len(ti.linkname) <= 100):
        return None
    numbers = (ti.uid, ti.gid, ti.size, ti.mtime)
    if not all(type(n) is int and 0 <= n < limit for n, limit in zip(numbers, _NUMBER_LIMITS, strict=True)):
        return None
    head = b"%s%07o\0%07o\0%07o\0%011o\0%011o\0        %s%s" % (
        name.encode().ljust(100, b"\0"), ti.mode & 0o7777, ti.uid, ti.gid, ti.size, int(ti.mtime), ti.type,
        ti.linkname.encode().ljust(100, b"\0")) + _USTAR_TAIL
    # the checksum: the header's byte sum with its own field as spaces, as 6 octal digits, NUL, space
    return head[:148] + b"%06o\0" % sum(head) + head[155:]


def _write_entry(
    tar: _TarStream, rel: str, host: str, st: os.stat_result | None, links: dict[tuple[int, int], str]
) -> None:
    if st is None or (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
        # Opaque marker, or an overlay whiteout (shared inodes, but never written as a hardlink).
        wh = tarfile.TarInfo(rel)
        wh.mode, wh.mtime = 0, int(os.lstat(host).st_mtime if st is None else st.st_mtime)
        tar.add(wh)
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
            tar.add(ti)
            return
    if fmt == stat.S_IFREG:
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
        with open(host, "rb", buffering=0) as f:  # one read(2) a MiB, no buffer between
            tar.add(ti, f)
        return
    if fmt == stat.S_IFDIR:
        ti.type = tarfile.DIRTYPE
        tar.add(ti)
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
    tar.add(ti)
