"""The one safe tar extractor: image layers (into overlay lower dirs) and the local archives ADD unpacks.

Extraction never writes outside `dest`: every parent dir is reached with `openat`-style calls from a dir fd
on `dest` (`paths.Root`), a symlink met on the way is resolved with `dest` as "/", and every leaf is created
or changed with `dir_fd=` and no-follow flags.
"""

from __future__ import annotations

import bz2
import errno
import functools
import gzip
import io
import lzma
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import IO, cast

from workbench.fsutil.paths import DIR_FLAGS, Root, UnsafePathError, remove_leaf
from workbench.fsutil.tarread import TarReader
from workbench.rootless.userns import inside_user_namespace, owner_here

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OPAQUE_XATTR = "user.overlay.opaque"
"""The opaque marker of an overlay mounted with `userxattr` (in a user namespace: rootless)."""
OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
"""xattrs overlayfs may keep for itself; which of them it does here is `overlay_xattrs()`."""
XATTR_PAX = "SCHILY.xattr."
"""The PAX header prefix of an xattr."""
_CHUNK = 1 << 20
_INLINE_LINK = 48
"""Targets shorter than this are kept in the inode on every Linux filesystem (ext4's limit is 60): no block."""
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LAYER_COMPRESSIONS = frozenset({"gzip", "zstd"})  # containerd's DetectCompression
_ARCHIVE_COMPRESSIONS = frozenset({"gzip", "zstd", "bzip2", "xz"})  # moby's, for ADD
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))

Owner = tuple[int, int] | None


class UnsafeMemberError(UnsafePathError):
    """A member that cannot be extracted as it asks (a name or hard link leaving the root ...); the message names it."""


# --- decompression ---------------------------------------------------------------------------------------------


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


def sniff(stream: IO[bytes], n: int) -> tuple[bytes, IO[bytes]]:
    """The first `n` bytes of `stream` (fewer if it is shorter), and the whole stream again, those put back."""
    head = b""
    while len(head) < n:
        more = stream.read(n - len(head))
        if not more:
            break
        head += more
    return head, io.BufferedReader(_Prepend(head, stream), _CHUNK)


def _decompressed(stream: IO[bytes], formats: frozenset[str], media_type: str = "") -> IO[bytes]:
    """The tar stream inside `stream`, by its magic bytes (or a zstd media type) among `formats`, else as is."""
    head, raw = sniff(stream, 6)
    found = next((name for magic, name in _MAGIC if head.startswith(magic) and name in formats), "")
    if found == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if found == "zstd" or ("zstd" in media_type and "zstd" in formats):
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    if found == "bzip2":
        return cast(IO[bytes], bz2.BZ2File(raw))
    if found == "xz":
        return cast(IO[bytes], lzma.LZMAFile(raw))
    return raw


def is_archive(path: Path) -> bool:
    """Whether `path` is a regular file holding a tar (plain or compressed), by content, as BuildKit's ADD checks."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as f, tarfile.open(fileobj=_decompressed(f, _ARCHIVE_COMPRESSIONS), mode="r|") as tar:
            return tar.next() is not None
    except Exception:  # unreadable, not compressed as it claims, or no valid first tar header
        return False


# --- extraction ------------------------------------------------------------------------------------------------


def extract(stream: IO[bytes], dest: Path, *, whiteouts: bool, owner: Owner = None, media_type: str = "",
            compressed: bool = True) -> int:
    """Extract the (plain or, unless `compressed` is False, compressed) tar `stream` into the existing dir `dest`,
    streaming, with `dest` as "/".

    `whiteouts`: the tar is an image layer, extracted as containerd applies one into an overlay lower dir:
    `.wh.NAME` becomes a 0:0 char device, `.wh..wh..opq` the opaque xattr on its dir, PAX xattrs are set, a
    name's leading "/" and escaping ".." are dropped, and the texts of errors speak of the layer. Otherwise it
    is an archive ADD unpacks (moby's Untar): `.wh.` names are plain files, no xattrs, a name or hard link that
    climbs out with ".." is an `UnsafeMemberError`, and a hard link takes its header's owner, mode and mtime.
    Members keep their numeric owner unless `owner` is given. A hard link must point at a member already
    extracted, reached without any symlink. Raises `UnsafePathError` (or `UnsafeMemberError`, naming the
    member) where a member cannot be placed safely.

    Returns, for an image layer, the bytes allocated to `dest` and what was made in it (as `du` counts them; a
    member that replaces one of the same layer, or a parent dir the tar does not list, is not counted right),
    measured on the files as they are made; 0 for an archive.
    """
    formats = _LAYER_COMPRESSIONS if whiteouts else _ARCHIVE_COMPRESSIONS
    return _Extraction(dest, layer=whiteouts, owner=owner).run(_decompressed(stream, formats, media_type)
                                                               if compressed else stream)


class _Extraction:
    """One tar being extracted (see `extract`)."""

    def __init__(self, dest: Path, *, layer: bool, owner: Owner) -> None:
        self.dest, self.layer, self.owner = dest, layer, owner
        self.dir_times: list[tuple[tuple[str, ...], float]] = []
        self.blocks = 0  # 512-byte blocks allocated to what a layer made (files, symlinks; dirs at the end)

    def run(self, stream: IO[bytes]) -> int:
        self.root = Root(self.dest)
        try:
            tar = TarReader(stream)
            for m in tar:
                try:
                    parts = self.parts(m.name)
                    if parts:  # not the root itself: containerd and moby ignore it
                        self.member(tar, m, parts)
                except (OverflowError, ValueError) as e:  # a time, id or name the system cannot take (a NUL ...)
                    raise tarfile.ReadError(f"{m.name!r}: {e}") from None
            counted: set[tuple[str, ...]] = set()
            for canonical, mtime in reversed(self.dir_times):  # children first changed their parents' times
                try:
                    fd, _ = self.root.open_dir(list(canonical), "", create=False, follow=False)
                except (OSError, UnsafePathError):
                    continue  # replaced or removed by a later member
                try:
                    os.utime(fd, (mtime, mtime))
                    if self.layer and canonical not in counted:  # its size once all its entries are made
                        counted.add(canonical)
                        self.blocks += os.fstat(fd).st_blocks
                finally:
                    os.close(fd)
            if self.layer:
                self.blocks += os.fstat(self.root.fd).st_blocks
        finally:
            self.root.close()
        return self.blocks * 512 if self.layer else 0

    def parts(self, name: str) -> list[str]:
        """A member name → components below the root."""
        if self.layer:  # leading "/" and escaping ".." dropped
            return [p for p in posixpath.normpath("/" + name).split("/") if p]
        clean = posixpath.normpath(name.lstrip("/"))
        if clean in ("", "."):
            return []
        if clean == ".." or clean.startswith("../"):
            raise UnsafeMemberError(f"archive path {name!r} is outside extraction root")
        return clean.split("/")

    def member(self, tar: TarReader, m: tarfile.TarInfo, parts: list[str]) -> None:
        root, base = self.root, parts[-1]
        pfd, canonical = root.parent(tuple(parts[:-1]), m.name)
        if self.layer and base.startswith(WHITEOUT_PREFIX):
            _whiteout(pfd, m, base)
            return

        # Files and dirs are made first and an existing entry looked at only if that fails (one syscall less
        # for each member of a fresh layer); anything else replaces what is there.
        if not (m.isreg() or m.isdir()):
            remove_leaf(pfd, base)  # a child of the cached parent: the cache stays valid

        uid, gid = owner_here(*(self.owner if self.owner is not None else (m.uid, m.gid)))
        mode = m.mode & 0o7777
        xattrs = _xattrs(m) if self.layer else []
        if m.isreg():
            try:
                fd = os.open(base, _NEW_FILE, 0o600, dir_fd=pfd)
            except FileExistsError:
                remove_leaf(pfd, base)
                fd = os.open(base, _NEW_FILE, 0o600, dir_fd=pfd)
            try:
                tar.copy_to(m, fd)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                _set_xattrs(fd, xattrs)
                os.utime(fd, (m.mtime, m.mtime))
                if self.layer:
                    self.blocks += os.fstat(fd).st_blocks
            finally:
                os.close(fd)
        elif m.isdir():
            try:
                os.mkdir(base, 0o700, dir_fd=pfd)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(base, dir_fd=pfd, follow_symlinks=False).st_mode):
                    remove_leaf(pfd, base)
                    os.mkdir(base, 0o700, dir_fd=pfd)
            fd = os.open(base, DIR_FLAGS, dir_fd=pfd)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                _set_xattrs(fd, xattrs)
            finally:
                os.close(fd)
            self.dir_times.append(((*canonical, base), m.mtime))
        elif m.islnk():
            self.hardlink(m, pfd, base)
            if not self.layer and not stat.S_ISLNK(os.stat(base, dir_fd=pfd, follow_symlinks=False).st_mode):
                os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
                os.chmod(base, mode, dir_fd=pfd)
                os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
            _set_xattrs(f"/proc/self/fd/{pfd}/{base}", xattrs, follow=False)
            os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
            if self.layer and len(m.linkname.encode("utf-8", "surrogateescape")) >= _INLINE_LINK:
                self.blocks += os.stat(base, dir_fd=pfd, follow_symlinks=False).st_blocks
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            device = os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0
            os.mknod(base, kind | 0o600, device, dir_fd=pfd)
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(base, mode, dir_fd=pfd, follow_symlinks=False)
            _set_xattrs(f"/proc/self/fd/{pfd}/{base}", xattrs, follow=False)
            os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        # Other member types (GNU volume headers ...) carry no file.

    def hardlink(self, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        """Hard link `base` to `m.linkname`, a path below the root reached without any symlink."""
        target = self.parts(m.linkname)
        if not target:
            raise self.link_error(m, "root")
        try:
            tfd, _ = self.root.open_dir(target[:-1], m.name, create=False, follow=False)
        except (FileNotFoundError, NotADirectoryError):
            raise self.link_error(m, "missing") from None
        try:
            if stat.S_ISDIR(os.stat(target[-1], dir_fd=tfd, follow_symlinks=False).st_mode):
                raise self.link_error(m, "dir")
            os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise self.link_error(m, "missing") from None
        finally:
            os.close(tfd)

    def link_error(self, m: tarfile.TarInfo, problem: str) -> UnsafeMemberError:
        """A hard link that cannot be made: to the `root`, to a `missing` path or to a `dir`."""
        if self.layer:
            what = {"root": "hard link to the layer root",
                    "missing": f"hard link target {m.linkname} is not in the layer",
                    "dir": f"hard link target {m.linkname} is a directory"}[problem]
            return UnsafeMemberError(f"{m.name}: {what}")
        if problem == "root":
            return UnsafeMemberError(f"archive hard link {m.name!r} targets the extraction root")
        what = "is not in the archive" if problem == "missing" else "is a directory"
        return UnsafeMemberError(f"archive hard link {m.name!r}: target {m.linkname!r} {what}")


def _whiteout(pfd: int, m: tarfile.TarInfo, base: str) -> None:
    """A layer's `.wh.` member in the dir `pfd`, in overlayfs' form."""
    if base == OPAQUE:
        os.setxattr(pfd, opaque_xattr(), b"y")
        return
    if base.startswith(WHITEOUT_META_PREFIX):  # other AUFS metadata (.wh..wh.plnk ...): not content
        return
    name = base[len(WHITEOUT_PREFIX):]
    if name in ("", ".", ".."):
        raise UnsafeMemberError(f"{m.name}: whiteout of {name!r} is not a file name")
    remove_leaf(pfd, name)
    os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
    os.chown(name, *owner_here(m.uid, m.gid), dir_fd=pfd, follow_symlinks=False)
    os.utime(name, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)


def opaque_xattr() -> str:
    """The opaque-dir xattr our overlay mounts read: the `user.` one inside a user namespace (`userxattr`)."""
    return USER_OPAQUE_XATTR if inside_user_namespace() else OPAQUE_XATTR


@functools.cache
def overlay_xattrs() -> tuple[str, ...]:
    """The xattr prefixes our overlay mounts keep for themselves, never taken from a layer nor written into one:
    `trusted.overlay.*`, and `user.overlay.*` inside a user namespace (rootless mounts use `userxattr`). Root's
    mounts never read `user.overlay.*`: there it is a step's own data (nested rootless storage), kept in layers.
    Asked once per process: the namespace is entered at start, before any build."""
    return OVERLAY_XATTRS if inside_user_namespace() else OVERLAY_XATTRS[:1]


def opaque_markers() -> tuple[str, ...]:
    """The opaque-dir xattrs a snapshot or upper dir of this mode may carry."""
    return (OPAQUE_XATTR, USER_OPAQUE_XATTR) if len(overlay_xattrs()) > 1 else (OPAQUE_XATTR,)


def is_opaque(path: str) -> bool:
    """Whether the dir `path` of a snapshot or upper dir is opaque (the overlay markers of this mode)."""
    for key in opaque_markers():
        try:
            if os.getxattr(path, key, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def _xattrs(m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    return [
        (k[len(XATTR_PAX):], v.encode("utf-8", "surrogateescape"))
        for k, v in m.pax_headers.items()
        if k.startswith(XATTR_PAX) and not k[len(XATTR_PAX):].startswith(overlay_xattrs())
    ]


def _set_xattrs(target: int | str, xattrs: list[tuple[str, bytes]], follow: bool = True) -> None:
    for key, value in xattrs:
        try:
            os.setxattr(target, key, value, follow_symlinks=follow)
        except OSError as e:  # e.g. user.* on a symlink, or a filesystem without that namespace
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
