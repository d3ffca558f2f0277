"""overlayfs mounts for snapshots, with lower dirs given relative to their common parent.

Relative paths keep the mount options short, so chains of many layers fit in the kernel's one-page
limit for mount data.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

_MAX_OPTIONS = 4095  # mount data is one page, NUL included


class OverlayError(OSError):
    """A mount or unmount failed; the message carries mount's own error output."""


def _option_path(base: str, path: Path) -> str:
    rel = os.path.relpath(os.path.abspath(path), base)
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
        _run(["mount", "--bind", str(lowers[0]), str(target)], None)
        try:
            _run(["mount", "-o", "remount,bind,ro", str(target)], None)
        except OverlayError:
            unmount(target)
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
    want = os.fsencode(os.path.realpath(target))
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), line.split(b" ", 5)[4])
            if point == want:
                return True
    return False


def unmount(target: Path) -> None:
    """Unmount `target`; a path that is not mounted is fine; a busy one is detached lazily."""
    if not is_mounted(target):
        return
    proc = subprocess.run(["umount", str(target)], capture_output=True, text=True)
    if proc.returncode == 0 or not is_mounted(target):
        return
    lazy = subprocess.run(["umount", "-l", str(target)], capture_output=True, text=True)
    if lazy.returncode != 0 and is_mounted(target):
        raise OverlayError(f"umount {target}: {proc.stderr.strip()}; lazy: {lazy.stderr.strip()}")


def _run(cmd: list[str], cwd: str | None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OverlayError(f"{' '.join(cmd)}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
