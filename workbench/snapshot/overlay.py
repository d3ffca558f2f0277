"""overlayfs mounts for snapshots, made with the mount(2) syscall.

Absolute lower dirs are used while the options fit the kernel's one-page limit for mount data; longer
chains fall back to mount(8) run in the lower dirs' common parent with relative paths (a thread cannot
change the process's working directory for the syscall).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import subprocess
from pathlib import Path

from workbench.mountinfo import mounts

_MAX_OPTIONS = 4095  # mount data is one page, NUL included
_MS_RDONLY, _MS_REMOUNT, _MS_BIND = 1, 32, 4096
_MNT_DETACH = 2


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _sys_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    res = _libc().mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                        data.encode() if data else None)
    if res != 0:
        err = ctypes.get_errno()
        raise OverlayError(err, f"mount {source} on {target}: {os.strerror(err)}")


class OverlayError(OSError):
    """A mount or unmount failed; the message carries mount's own error output."""


def _option_path(base: str, path: Path) -> str:
    """`path` for the options: relative to `base`, or absolute when `base` is "/"."""
    rel = os.path.abspath(path) if base == "/" else os.path.relpath(os.path.abspath(path), base)
    if any(c in rel for c in ",:\\\n"):
        raise OverlayError(f"{path}: ',', ':', '\\' and newlines cannot be used in overlay mount options")
    return rel


def mount_overlay(lowers: list[Path], upper: Path | None, work: Path | None, target: Path) -> None:
    """Mount `lowers` (topmost first) with an optional `upper`/`work` pair at `target`.

    Paths are passed relative to their common parent (mount runs there). Without an upper dir the
    mount is read-only; a single lower is then bind-mounted read-only instead.
    """
    if not lowers:
        raise OverlayError("an overlay mount needs at least one lower dir")
    if (upper is None) != (work is None):
        raise OverlayError("upper and work dirs go together")
    if upper is None and len(lowers) == 1:
        _sys_mount(os.path.abspath(lowers[0]), os.path.abspath(target), None, _MS_BIND, None)
        try:
            _sys_mount("none", os.path.abspath(target), None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
        except OverlayError:
            unmount(target)
            raise
        return
    options = "lowerdir=" + ":".join(_option_path("/", p) for p in lowers)
    if upper is not None and work is not None:
        options += f",upperdir={_option_path('/', upper)},workdir={_option_path('/', work)}"
    else:
        options += ",ro"
    if len(options) <= _MAX_OPTIONS:
        try:
            _sys_mount("overlay", os.path.abspath(target), "overlay", 0, options)
        except OverlayError as e:
            missing = [str(p) for p in [*lowers, upper, work, target] if p is not None and not os.path.isdir(p)]
            if missing:
                raise OverlayError(e.errno, f"{e.strerror}; missing: {', '.join(missing)}") from None
            raise
        return
    extra = [p for p in (upper, work) if p is not None]
    base = os.path.commonpath([os.path.abspath(p) for p in [*lowers, *extra]])
    options = "lowerdir=" + ":".join(_option_path(base, p) for p in lowers)
    if upper is not None and work is not None:
        options += f",upperdir={_option_path(base, upper)},workdir={_option_path(base, work)}"
    else:
        options += ",ro"
    if len(options) > _MAX_OPTIONS:
        raise OverlayError(f"overlay mount options are {len(options)} bytes, over the {_MAX_OPTIONS}-byte limit")
    _run(["mount", "-t", "overlay", "overlay", "-o", options, os.path.abspath(target)], base)


def is_mounted(target: Path) -> bool:
    """Whether `target` is a mount point (bind mounts of a dir on the same filesystem included)."""
    want = os.path.realpath(target)
    return any(m.point == want for m in mounts())


def unmount(target: Path) -> None:
    """Unmount `target`; a path that is not mounted is fine; a busy one is detached lazily."""
    path = os.path.abspath(target).encode()
    if _libc().umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL and not is_mounted(target):
        return  # not a mount point
    if err == errno.ENOENT:
        return
    if _libc().umount2(path, _MNT_DETACH) != 0 and is_mounted(target):
        lazy_err = ctypes.get_errno()
        raise OverlayError(lazy_err, f"umount {target}: {os.strerror(err)}; lazy: {os.strerror(lazy_err)}")


def _run(cmd: list[str], cwd: str | None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OverlayError(f"{' '.join(cmd)}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
