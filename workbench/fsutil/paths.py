"""Container paths inside a root directory, symlinks resolved as the container would see them (the root is "/").

`resolve_in_root` works on path strings; `Root` reaches dirs through file descriptors, `openat`-style, so that
nothing it opens or creates can lie outside the root even while the tree changes (containerd's `fs.RootPath`).
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from pathlib import Path

_MAX_LINKS = 255
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""`os.open` flags for a dir reached without following a symlink."""


class PathEscapeError(OSError):
    pass


class UnsafePathError(Exception):
    """A path that would leave the root, or that cannot be reached safely; the message names it."""


def resolve_in_root(root: Path, path: str, follow_final: bool = True) -> Path:
    """The host path of container path `path` under `root`.

    Symlinks are resolved with `root` as "/" so no result can point outside `root`. The final component
    is followed only when `follow_final`; missing components are kept as they are.
    """
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        if name == ".":
            continue
        candidate = os.path.join(root, *resolved, name)
        is_last = not parts
        if (follow_final or not is_last) and os.path.islink(candidate):
            links += 1
            if links > _MAX_LINKS:
                raise PathEscapeError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(name)
    return Path(root, *resolved)


class Root:
    """Dir-fd based access to a root dir; nothing reached through it can lie outside."""

    def __init__(self, dest: Path) -> None:
        self.fd = os.open(dest, DIR_FLAGS)
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

        Returns a new fd (caller closes) and the canonical path of the dir. `member` names the path in errors.
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
                    fd = os.open(name, DIR_FLAGS, dir_fd=fds[-1])
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fds[-1])
                    fd = os.open(name, DIR_FLAGS, dir_fd=fds[-1])
                except OSError as e:
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        raise UnsafePathError(f"{member}: {'/'.join(names + [name])} is not a directory") from None
                    if not follow:
                        raise UnsafePathError(f"{member}: path goes through symlink {'/'.join(names + [name])}") \
                            from None
                    links += 1
                    if links > _MAX_LINKS:
                        raise UnsafePathError(f"{member}: too many levels of symbolic links") from None
                    target = os.readlink(name, dir_fd=fds[-1])
                    if target.startswith("/"):  # absolute: from the root, never the host's
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


def open_beneath(root_fd: int, parts: list[str], mode: int | None = None) -> int:
    """A new fd on directory `parts` below `root_fd`, opened one component at a time, following no symlink
    (ELOOP or ENOTDIR where a component is one); with `mode`, a missing component is made with it."""
    fd = os.dup(root_fd)
    for part in parts:
        try:
            if mode is not None:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def remove_leaf(dir_fd: int, name: str) -> None:
    """Remove `name` in `dir_fd` (a whole tree if it is a real dir); absent is fine."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
