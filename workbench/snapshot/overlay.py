"""overlayfs mounts for snapshots, with lower dirs given relative to their common parent.

Relative paths keep the mount options short, so chains of many layers fit in the kernel's one-page
limit for mount data.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class OverlayError(OSError):
    pass


def _relative_to(base: str, path: Path) -> str:
    return os.path.relpath(os.path.abspath(path), base)


def mount_overlay(lowers: list[Path], upper: Path | None, work: Path | None, target: Path) -> None:
    """Mount `lowers` (topmost first) with an optional `upper`/`work` pair at `target`.

    Without an upper dir the mount is read-only; a single lower is then bind-mounted read-only.
    """
    if not lowers:
        raise OverlayError("an overlay mount needs at least one lower dir")
    if upper is None and len(lowers) == 1:
        cmds = [["mount", "--bind", str(lowers[0]), str(target)],
                ["mount", "-o", "remount,bind,ro", str(target)]]
        for cmd in cmds:
            _run(cmd, None)
        return
    paths = [os.path.abspath(p) for p in lowers] + [os.path.abspath(p) for p in (upper, work) if p is not None]
    base = os.path.commonpath(paths)
    options = "lowerdir=" + ":".join(_relative_to(base, p) for p in lowers)
    if upper is not None:
        if work is None:
            raise OverlayError("an upper dir needs a work dir")
        options += f",upperdir={_relative_to(base, upper)},workdir={_relative_to(base, work)}"
    else:
        options += ",ro"
    _run(["mount", "-t", "overlay", "overlay", "-o", options, os.path.abspath(target)], base)


def unmount(target: Path) -> None:
    """Unmount `target`; a path that is not mounted is fine; a busy one is detached lazily."""
    if not os.path.ismount(target):
        return
    proc = subprocess.run(["umount", str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, text=True)


def _run(cmd: list[str], cwd: str | None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OverlayError(f"{' '.join(cmd)}: {proc.stderr.strip() or 'failed'}")
