"""overlayfs mounts for snapshots, made with the mount(2) syscall.

Absolute lower dirs are used while the options fit the kernel's one-page limit for mount data. Longer
stacks are passed as short paths relative to a directory the lower dirs share, the way containerd does:
the mount is made by a short-lived thread that unshares its filesystem attributes (CLONE_FS) and
`chdir`s there, so the rest of the (multithreaded) process keeps its working directory. Stacks that do
not fit even so (see `fits`) are the caller's to shorten (`SnapshotManager` flattens their bottom).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import threading
from pathlib import Path

from workbench.mountinfo import mounts
from workbench.rootless.userns import inside_user_namespace

MAX_LOWERS = 500  # the kernel's OVL_MAX_STACK
_MAX_OPTIONS = 4095  # mount data is one page, NUL included
_MS_RDONLY, _MS_REMOUNT, _MS_BIND = 1, 32, 4096
_MNT_DETACH = 2
_CLONE_FS = 0x200


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _sys_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    res = _libc().mount(os.fsencode(source), os.fsencode(target), fstype.encode() if fstype else None, flags,
                        os.fsencode(data) if data else None)
    if res != 0:
        err = ctypes.get_errno()
        raise OverlayError(err, f"mount {source} on {target}: {os.strerror(err)}")


class OverlayError(OSError):
    """A mount or unmount failed; the message carries mount's own error output."""


def _check(path: str) -> str:
    if any(c in path for c in ",:\\\n"):
        raise OverlayError(f"{path}: ',', ':', '\\' and newlines cannot be used in overlay mount options")
    return path


def _option_path(base: str | None, path: Path) -> str:
    """`path` for the options: absolute, or relative to `base` when that is shorter."""
    absolute = os.path.abspath(path)
    if base is None:
        return _check(absolute)
    rel = os.path.relpath(absolute, base)
    return _check(rel if len(rel) < len(absolute) else absolute)


def _options(base: str | None, lowers: list[Path], upper: Path | None, work: Path | None) -> str:
    options = "lowerdir=" + ":".join(_option_path(base, p) for p in lowers)
    if inside_user_namespace():  # rootless: whiteouts and opaque dirs are user.overlay.* xattrs (kernel >= 5.11)
        options += ",userxattr"
    if upper is not None and work is not None:
        return options + f",upperdir={_option_path(base, upper)},workdir={_option_path(base, work)}"
    return options + ",ro"


def _shortest(lowers: list[Path], upper: Path | None, work: Path | None) -> tuple[str | None, str]:
    """The working directory to mount from (None: any) and the shortest options it allows."""
    best: tuple[str | None, str] = (None, _options(None, lowers, upper, work))
    if len(best[1]) <= _MAX_OPTIONS:
        return best
    # Snapshots are `<dir>/<id>/fs`: their parents' parents (and what they all share) are the candidates.
    absolute = [os.path.abspath(p) for p in lowers]
    bases = {os.path.dirname(os.path.dirname(p)) for p in absolute} | {os.path.commonpath(absolute)}
    for base in sorted(bases):
        options = _options(base, lowers, upper, work)
        if len(options) < len(best[1]):
            best = (base, options)
    return best


def fits(lowers: list[Path], upper: Path | None = None, work: Path | None = None) -> bool:
    """Whether one overlay mount can stack `lowers` (the kernel's layer and option-size limits)."""
    return len(lowers) <= MAX_LOWERS and len(_shortest(lowers, upper, work)[1]) <= _MAX_OPTIONS


def mount_overlay(lowers: list[Path], upper: Path | None, work: Path | None, target: Path) -> None:
    """Mount `lowers` (topmost first) with an optional `upper`/`work` pair at `target`.

    Without an upper dir the mount is read-only; a single lower is then bind-mounted read-only instead.
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
    if len(lowers) > MAX_LOWERS:
        raise OverlayError(f"an overlay mount stacks at most {MAX_LOWERS} lower dirs, not {len(lowers)}")
    base, options = _shortest(lowers, upper, work)
    if len(options) > _MAX_OPTIONS:
        raise OverlayError(f"overlay mount options are {len(options)} bytes, over the {_MAX_OPTIONS}-byte limit")
    try:
        if base is None:
            _sys_mount("overlay", os.path.abspath(target), "overlay", 0, options)
        else:
            _mount_from(base, os.path.abspath(target), options)
    except OverlayError as e:
        missing = [str(p) for p in [*lowers, upper, work, target] if p is not None and not os.path.isdir(p)]
        if missing:
            raise OverlayError(e.errno, f"{e.strerror}; missing: {', '.join(missing)}") from None
        raise


def _mount_from(base: str, target: str, options: str) -> None:
    """mount(2) the overlay with relative paths in `options`, from a thread whose working dir is `base`."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            # Only this thread's cwd changes: it stops sharing fs attributes with the process first.
            if _libc().unshare(_CLONE_FS) != 0:
                err = ctypes.get_errno()
                raise OverlayError(err, f"unshare(CLONE_FS): {os.strerror(err)}")
            os.chdir(base)
            _sys_mount("overlay", target, "overlay", 0, options)
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    thread = threading.Thread(target=run, name="overlay-mount", daemon=True)
    thread.start()
    thread.join()
    if failure:
        if isinstance(failure[0], OverlayError):
            raise failure[0]
        raise OverlayError(f"mount overlay on {target} from {base}: {failure[0]}")


def is_mounted(target: Path) -> bool:
    """Whether `target` is a mount point (bind mounts of a dir on the same filesystem included)."""
    want = os.path.realpath(target)
    return any(m.point == want for m in mounts())


def unmount(target: Path) -> None:
    """Unmount `target`; a path that is not mounted is fine; a busy one is detached lazily."""
    path = os.fsencode(os.path.abspath(target))
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
