"""`--output type=local,dest=DIR`: the final filesystem, written as plain files.

Everything below DIR is reached from DIR's descriptor one component at a time (openat with O_NOFOLLOW), so a
symlink or a hard link already in DIR (left by an earlier export, or put there by someone else) is replaced,
never followed or written through: a file is created afresh (O_EXCL) after whatever had its name is
removed, and a directory symlink gives way to the directory. Owners, modes, times, xattrs (best effort),
symlinks, hard links and special files are kept, as `cp -a` did; DIR itself takes the root's metadata.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from workbench.fsutil.destination import DestinationError, reason
from workbench.fsutil.paths import DIR_FLAGS, open_beneath, remove_leaf
from workbench.rootless.userns import entered
from workbench.snapshot.manager import SnapshotManager

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WHAT = "--output type=local"
T = TypeVar("T")


def export_local(chain: list[str], snapshots: SnapshotManager, dest: Path) -> None:
    """Write the filesystem of `chain` into `dest` (created if missing); DestinationError naming the path
    that could not be written."""
    dest_fd = open_destination(dest)
    try:
        if chain:
            # The view is read-only and never whiteout-bearing except for a single base layer, which has none.
            with snapshots.mount_readonly(chain) as root:
                copy_tree(Path(root), dest_fd, dest)
    finally:
        os.close(dest_fd)


def open_destination(dest: Path) -> int:
    """Create `dest` (and its parents) if missing and open it; DestinationError if that cannot be done."""
    try:
        Path(dest).mkdir(parents=True, exist_ok=True)
        return os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileExistsError:
        raise DestinationError(f"{_WHAT}: cannot write to {dest}: it exists and is not a directory") from None
    except OSError as e:
        raise DestinationError(f"{_WHAT}: cannot write to {dest}: {reason(e)}") from None


def copy_tree(src: Path, dest_fd: int, dest: Path) -> None:
    """Copy the tree `src` into the open directory `dest_fd` (`dest` names it in errors)."""
    src_fd = os.open(src, DIR_FLAGS)
    try:
        _Copier(dest_fd, dest).run(src_fd)
    finally:
        os.close(src_fd)


@dataclass
class _Dir:
    src: int
    dst: int
    st: os.stat_result
    rel: str
    names: list[str]


@dataclass
class _Copier:
    dest_fd: int
    dest: Path
    links: dict[tuple[int, int], str] = field(default_factory=dict)
    """(dev, ino) of a multiply-linked source file → where its first copy went (relative to dest)."""

    def run(self, src_fd: int) -> None:
        root = _Dir(os.dup(src_fd), os.dup(self.dest_fd), os.fstat(src_fd), "", sorted(os.listdir(src_fd)))
        stack = [root]  # a stack, not recursion: trees may be deeper than Python's recursion limit
        try:
            while stack:
                top = stack[-1]
                if not top.names:
                    stack.pop()
                    try:
                        self._finish_dir(top)
                    finally:
                        os.close(top.src)
                        os.close(top.dst)
                    continue
                name = top.names.pop()
                rel = f"{top.rel}/{name}" if top.rel else name
                try:
                    child = self._entry(top, name, rel)
                except DestinationError:
                    raise
                except OSError as e:
                    raise DestinationError(f"{_WHAT}: cannot write {self.dest / rel}: {reason(e)}") from None
                if child is not None:
                    stack.append(child)
        finally:
            for d in stack:
                os.close(d.src)
                os.close(d.dst)

    def _finish_dir(self, d: _Dir) -> None:
        try:
            _set_meta(d.dst, d.src, d.st)
        except OSError as e:
            raise DestinationError(f"{_WHAT}: cannot write {self.dest / d.rel}: {reason(e)}") from None

    def _entry(self, parent: _Dir, name: str, rel: str) -> _Dir | None:
        if name in ("", ".", "..") or "/" in name:  # never from readdir; a guard against a strange filesystem
            raise DestinationError(f"{_WHAT}: refusing the entry name {rel!r}")
        st = os.stat(name, dir_fd=parent.src, follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return self._dir(parent, name, rel, st)
        if stat.S_ISREG(mode):
            if st.st_nlink > 1 and (first := self.links.get((st.st_dev, st.st_ino))) and self._link(
                    first, parent.dst, name):
                return None
            self._file(parent, name, st)
            if st.st_nlink > 1:
                self.links.setdefault((st.st_dev, st.st_ino), rel)
        elif stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=parent.src)
            _replace(parent.dst, name, lambda: os.symlink(target, name, dir_fd=parent.dst))
            _chown(lambda: os.chown(name, st.st_uid, st.st_gid, dir_fd=parent.dst, follow_symlinks=False))
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent.dst, follow_symlinks=False)
        else:  # devices, fifos, sockets: made as cp -a makes them
            _replace(parent.dst, name, lambda: os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev,
                                                        dir_fd=parent.dst))
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.dst)
            try:
                via = f"/proc/self/fd/{fd}"  # chmod / chown / utime of this very node, without reopening it
                owned = _chown(lambda: os.chown(via, st.st_uid, st.st_gid))
                os.chmod(via, _mode(st, owned))
                os.utime(via, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
        return None

    def _dir(self, parent: _Dir, name: str, rel: str, st: os.stat_result) -> _Dir:
        existing = _lstat(parent.dst, name)
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            _replace(parent.dst, name, lambda: os.mkdir(name, 0o700, dir_fd=parent.dst))
        src = os.open(name, DIR_FLAGS, dir_fd=parent.src)
        try:
            dst = os.open(name, DIR_FLAGS, dir_fd=parent.dst)  # ELOOP if a symlink took its place meanwhile
        except BaseException:
            os.close(src)
            raise
        return _Dir(src, dst, st, rel, sorted(os.listdir(src)))

    def _file(self, parent: _Dir, name: str, st: os.stat_result) -> None:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.src)
        try:
            dst = _replace(parent.dst, name, lambda: os.open(name, _NEW_FILE, 0o600, dir_fd=parent.dst))
            try:
                _copy_data(src, dst, st.st_size)
                _set_meta(dst, src, st)
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _link(self, first: str, dst_dir: int, name: str) -> bool:
        """Hard-link `name` in `dst_dir` to the earlier copy `first`; False if that cannot be done."""
        *parents, base = first.split("/")
        try:
            at = open_beneath(self.dest_fd, parents)
        except OSError:
            return False
        try:
            _replace(dst_dir, name, lambda: os.link(base, name, src_dir_fd=at, dst_dir_fd=dst_dir,
                                                    follow_symlinks=False))
            return True
        except OSError as e:
            if e.errno in (errno.EMLINK, errno.ENOENT, errno.EPERM, errno.EXDEV):
                return False
            raise
        finally:
            os.close(at)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _replace(dir_fd: int, name: str, create: Callable[[], T]) -> T:
    """Remove whatever has `name` (never following it), then `create()` it anew; a thing that appears there
    again meanwhile is removed again, a few times, before giving up."""
    for _ in range(3):
        remove_leaf(dir_fd, name)
        try:
            return create()
        except FileExistsError:
            continue
    return create()


def _chown(call: Callable[[], None]) -> bool:
    """Give the entry its image owner; False when it stays the exporting user's."""
    if entered() is not None:
        # rootless: the image's owners would map to the user's subordinate ids, files the user could not then
        # change or remove; the output is the user's, as BuildKit's client writes a local output
        return False
    try:
        call()
    except PermissionError:
        return False  # not root: the files are the exporting user's, as with cp -a
    return True


def _mode(st: os.stat_result, owned: bool) -> int:
    """The permission bits to set: set-uid/set-gid dropped from a non-directory whose owner was not restored
    (as cp -a does), lest the user's own copy run with the user's ids, or a group's, it was never meant for."""
    mode = stat.S_IMODE(st.st_mode)
    if not owned and not stat.S_ISDIR(st.st_mode):
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    return mode


def _copy_data(src: int, dst: int, size: int) -> None:
    """Copy the whole of `src` to `dst` in the kernel (copy_file_range, else sendfile)."""
    left = size
    try:
        while left > 0 and (n := os.copy_file_range(src, dst, min(left, 1 << 30))):
            left -= n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
            raise
    offset = os.lseek(src, 0, os.SEEK_CUR)
    while n := os.sendfile(dst, src, offset, 1 << 30):
        offset += n


def _set_meta(dst: int, src: int, st: os.stat_result) -> None:
    """Owner, xattrs, mode and times of `src` (stat `st`) onto `dst`, in the order that keeps each (chown
    clears set-id bits and file capabilities)."""
    owned = _chown(lambda: os.fchown(dst, st.st_uid, st.st_gid))
    try:
        names = os.listxattr(src)
    except OSError:
        names = []
    for key in names:
        try:
            os.setxattr(dst, key, os.getxattr(src, key))
        except OSError:
            pass  # best effort, as cp -a: a destination filesystem may not take them
    os.fchmod(dst, _mode(st, owned))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
