"""A build's scratch dirs under `ROOT/tmp/<pid>-…`: whose they are, and removing them safely.

Every mount and runc container of a build lives below its scratch dir. Removal kills the containers,
undoes the mounts, and never deletes through a mount that stays; a dir whose process is gone is stale.
The snapshot manager, the reaper and GC share these helpers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from workbench.mountinfo import mounts
from workbench.snapshot.overlay import unmount


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (one we may not signal counts as alive; a zombie, exited
    but not yet reaped by its parent, does not: a subreaper may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split(maxsplit=1)[:1]
    except OSError:
        return True  # no /proc to look in: it was there a moment ago
    return state != [b"Z"]


def stale_entry(entry: Path) -> bool:
    """Whether `entry` (named `<pid>-...`) belongs to a process that is gone."""
    pid = entry.name.split("-", 1)[0]
    return pid.isdigit() and not pid_alive(int(pid))


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path` in this mount namespace, deepest first."""
    base = os.path.realpath(path)
    found = {m.point for m in mounts() if m.point == base or m.point.startswith(base + "/")}
    return [Path(p) for p in sorted(found, key=len, reverse=True)]


def _kill_containers(entry: Path) -> None:
    """Kill and delete the runc containers a dead build left running (their state is in `entry/runc`)."""
    state = entry / "runc"
    runc = shutil.which("runc")
    if runc is None or not state.is_dir():
        return
    for cid in os.listdir(state):
        subprocess.run([runc, "--root", str(state), "delete", "-f", cid], capture_output=True)


def remove_scratch(entry: Path) -> bool:
    """Kill the containers of, unmount everything under, and remove a dead build's temp dir; False (and
    nothing removed) if something under it stays mounted."""
    _kill_containers(entry)
    for target in mounts_under(entry):
        try:
            unmount(target)
        except OSError:
            pass
    if mounts_under(entry):
        return False  # never delete through a mount
    remove_tree(entry)
    return True


def clean_stale(tmp: Path) -> None:
    """Unmount and remove what killed builds left in `tmp` (their process is gone; nothing trusts it)."""
    if not tmp.is_dir():
        return
    for entry in tmp.iterdir():
        if stale_entry(entry):
            remove_scratch(entry)


def remove_tree(path: Path) -> None:
    """`shutil.rmtree` that also removes entries of read-only dirs inside `path`."""

    def onerror(func: object, p: str, exc: object) -> None:
        # A read-only dir inside (e.g. chmod 555 in a step) blocks removal of its entries.
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, 0o700)
            os.chmod(p, 0o700) if os.path.isdir(p) and not os.path.islink(p) else None
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)  # noqa: B026 - onerror is the 3.11-compatible spelling
