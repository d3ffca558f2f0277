"""`--output type=local,dest=DIR`: the final filesystem, written as plain files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from workbench.snapshot.manager import SnapshotManager


def export_local(chain: list[str], snapshots: SnapshotManager, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if not chain:
        return
    with snapshots.mount_readonly(chain) as root:
        # cp -a keeps owners, modes, links and times; the view is read-only and never whiteout-bearing
        # except for a single base layer, which has no whiteouts to show.
        proc = subprocess.run(["cp", "-a", "--", f"{root}/.", str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"exporting to {dest} failed: {proc.stderr.strip()}")
