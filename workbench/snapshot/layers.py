"""Layer tars ⇄ snapshot dirs in overlayfs lower format.

Extraction never writes outside `dest`: every parent dir is reached with `openat`-style calls from a
dir fd on `dest`, never following a symlink out of it (a symlink met on the way is resolved with
`dest` as "/", like containerd's `fs.RootPath`), and every leaf is created or changed with
`dir_fd=` and no-follow flags.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO, BinaryIO, cast

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTRS = "trusted.overlay."
_XATTR_PAX = "SCHILY.xattr."
_MAX_LINKS = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class UnsafeLayerError(Exception):
    """A layer member that would write outside the snapshot dir, or that cannot be applied safely."""


# --- decompression ---------------------------------------------------------------------------------


class _Prepend(io.RawIOBase):
    """`stream` with `head` (already read from it) put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        if self.head:
            n = min(len(view), len(self.head))
            view[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.stream.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompressed(stream: IO[bytes], media_type: str) -> IO[bytes]:
    """The tar stream inside `stream`: gzip or zstd by magic bytes (or a zstd media type), else as is."""
    head = b""
    while len(head) < 4:
        more = stream.read(4 - len(head))
        if not more:
            break
        head += more
    raw = io.BufferedReader(_Prepend(head, stream), _CHUNK)
    if head[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if head == b"\x28\xb5\x2f\xfd" or "zstd" in media_type:
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


# --- safe path resolution --------------------------------------------------------------------------


def _clean(name: str) -> list[str]:
    """Member name → components relative to the layer root (leading "/" and escaping ".." dropped)."""
    return [p for p in posixpath.normpath("/" + name).split("/") if p]


class _Root:
    """Dir-fd based access to the snapshot dir; nothing reached through it can lie outside."""

    def __init__(self, dest: Path) -> None:
        self.fd = os.open(dest, _DIR_FLAGS)
        self._cache: tuple[tuple[str, ...], int, tuple[str, ...]] | None = None

    def close(self) -> None:
        self.invalidate()
        os.close(self.fd)

    def invalidate(self) -> None:
        """Forget the cached parent dir."""
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    def parent(self, parts: tuple[str, ...], member: str) -> tuple[int, tuple[str, ...]]:
        """A borrowed fd on dir `parts` (created if missing) and its canonical path, for the member's leaf."""
        if self._cache is not None and self._cache[0] == parts:
            return self._cache[1], self._cache[2]
        fd, canonical = self.open_dir(list(parts), member, create=True, follow=True)
        self.invalidate()
        self._cache = (parts, fd, canonical)
        return fd, canonical

    def open_dir(self, parts: list[str], member: str, *, create: bool, follow: bool) -> tuple[int, tuple[str, ...]]:
        """Open dir `parts` below the root; symlinks are resolved inside the root when `follow`, else refused.

        Returns a new fd (caller closes) and the canonical path of the dir.
        """
        pending = list(reversed(parts))
        fds = [os.dup(self.fd)]
        names: list[str] = []
        links = 0
        try:
            while pending:
                name = pending.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if names:
                        names.pop()
                        os.close(fds.pop())
                    continue
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=fds[-1])
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fds[-1])
                    fd = os.open(name, _DIR_FLAGS, dir_fd=fds[-1])
                except OSError as e:
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        raise UnsafeLayerError(f"{member}: {'/'.join(names + [name])} is not a directory") from None
                    if not follow:
                        raise UnsafeLayerError(f"{member}: path goes through symlink {'/'.join(names + [name])}") \
                            from None
                    links += 1
                    if links > _MAX_LINKS:
                        raise UnsafeLayerError(f"{member}: too many levels of symbolic links") from None
                    target = os.readlink(name, dir_fd=fds[-1])
                    if target.startswith("/"):  # absolute: from the layer root, never the host's
                        for extra in fds[1:]:
                            os.close(extra)
                        del fds[1:]
                        names.clear()
                    pending.extend(reversed(target.split("/")))
                    continue
                fds.append(fd)
                names.append(name)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        for fd in fds[:-1]:
            os.close(fd)
        return fds[-1], tuple(names)


def _remove_leaf(dir_fd: int, name: str) -> None:
    """Remove `name` in `dir_fd` (a whole tree if it is a real dir); absent is fine."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


# --- extraction ------------------------------------------------------------------------------------


def _xattrs(m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    return [
        (k[len(_XATTR_PAX):], v.encode("utf-8", "surrogateescape"))
        for k, v in m.pax_headers.items()
        if k.startswith(_XATTR_PAX) and not k[len(_XATTR_PAX):].startswith(_OVERLAY_XATTRS)
    ]


def _set_xattrs(target: int | str, xattrs: list[tuple[str, bytes]], follow: bool = True) -> None:
    for key, value in xattrs:
        try:
            os.setxattr(target, key, value, follow_symlinks=follow)
        except OSError as e:  # e.g. user.* on a symlink, or a filesystem without that namespace
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


def extract_layer(
    stream: BinaryIO, dest: Path, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"
) -> None:
    """Extract a (gzip/zstd/plain) layer tar into `dest` as an overlay lower dir, streaming.

    `.wh.NAME` becomes a 0:0 char device, `.wh..wh..opq` the opaque xattr on its dir. Members are
    placed with `dest` as "/"; a member that would reach outside raises `UnsafeLayerError`.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = _Root(dest)
    dir_times: list[tuple[tuple[str, ...], float]] = []
    try:
        with tarfile.open(fileobj=_decompressed(stream, media_type), mode="r|") as tar:
            for m in tar:
                parts = _clean(m.name)
                if not parts:  # the layer root itself: containerd ignores it too
                    continue
                _apply(root, tar, m, parts, dir_times)
        for canonical, mtime in reversed(dir_times):  # children first changed their parents' times
            try:
                fd, _ = root.open_dir(list(canonical), "", create=False, follow=False)
            except (OSError, UnsafeLayerError):
                continue  # replaced or removed by a later member
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
    finally:
        root.close()


def _apply(
    root: _Root, tar: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str],
    dir_times: list[tuple[tuple[str, ...], float]],
) -> None:
    member, base = m.name, parts[-1]
    pfd, canonical = root.parent(tuple(parts[:-1]), member)

    if base.startswith(WHITEOUT_PREFIX):
        if base == OPAQUE:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_META_PREFIX):  # other AUFS metadata (.wh..wh.plnk ...): not content
            return
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise UnsafeLayerError(f"{member}: whiteout of {name!r} is not a file name")
        _remove_leaf(pfd, name)
        os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
        os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(name, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        return

    try:
        existing: os.stat_result | None = os.stat(base, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
        _remove_leaf(pfd, base)  # a child of the cached parent: the cache stays valid
        existing = None

    mode = m.mode & 0o7777
    if m.isreg():
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        try:
            src = tar.extractfile(m)
            if src is not None:
                with os.fdopen(os.dup(fd), "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, mode)
            _set_xattrs(fd, _xattrs(m))
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)
        return
    if m.isdir():
        if existing is None:
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        try:
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, mode)
            _set_xattrs(fd, _xattrs(m))
        finally:
            os.close(fd)
        dir_times.append(((*canonical, base), m.mtime))
        return
    if m.islnk():
        _hardlink(root, m, pfd, base)
        return
    if m.issym():
        os.symlink(m.linkname, base, dir_fd=pfd)
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        _set_xattrs(f"/proc/self/fd/{pfd}/{base}", _xattrs(m), follow=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        return
    if m.ischr() or m.isblk() or m.isfifo():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
        device = os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0
        os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, mode, dir_fd=pfd, follow_symlinks=False)
        _set_xattrs(f"/proc/self/fd/{pfd}/{base}", _xattrs(m), follow=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        return
    # Other member types (GNU volume headers ...) carry no file.


def _hardlink(root: _Root, m: tarfile.TarInfo, pfd: int, base: str) -> None:
    """Hard link `base` to `m.linkname`, a path inside the layer reached without any symlink."""
    target = _clean(m.linkname)
    if not target:
        raise UnsafeLayerError(f"{m.name}: hard link to the layer root")
    try:
        tfd, _ = root.open_dir(target[:-1], m.name, create=False, follow=False)
    except FileNotFoundError:
        raise UnsafeLayerError(f"{m.name}: hard link target {m.linkname} is not in the layer") from None
    try:
        st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayerError(f"{m.name}: hard link target {m.linkname} is a directory")
        os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        raise UnsafeLayerError(f"{m.name}: hard link target {m.linkname} is not in the layer") from None
    finally:
        os.close(tfd)


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
        if key.startswith(_OVERLAY_XATTRS):
            continue
        value = os.getxattr(host, key, follow_symlinks=False)
        headers[_XATTR_PAX + key] = value.decode("utf-8", "surrogateescape")
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
