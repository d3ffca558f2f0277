"""Snapshots: layers stored as overlayfs lower dirs under `ROOT/snapshots/<id>/fs`.

A new snapshot is prepared in a private temp dir (upper + work), filled through an overlay mount, and
renamed into `snapshots/` only once complete: a crash leaves at most a temp dir nobody trusts.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.snapshot.overlay import mount_overlay, unmount


class SnapshotManager:
    def __init__(self, root: Path) -> None:
        self.dir = root / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        _clean_stale(root / "tmp")
        self.tmp = root / "tmp" / f"{os.getpid()}-{secrets.token_hex(3)}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._empty = self.dir / "empty"
        self._empty.mkdir(exist_ok=True)

    def path(self, snapshot: str) -> Path:
        return self.dir / snapshot / "fs"

    def exists(self, snapshot: str) -> bool:
        return self.path(snapshot).is_dir()

    def _lowers(self, chain: list[str]) -> list[Path]:
        lowers = [self.path(s) for s in reversed(chain)]
        return lowers or [self._empty]

    @contextmanager
    def prepare(self) -> Iterator[Path]:
        """A fresh, empty snapshot dir to fill; use `commit` to keep it. Removed if not committed."""
        work = Path(self.tmp / f"new-{secrets.token_hex(6)}")
        (work / "fs").mkdir(parents=True)
        try:
            yield work
        finally:
            if work.exists():
                _remove_tree(work)

    def commit(self, prepared: Path) -> str:
        """Move a prepared snapshot into place and return its id."""
        snapshot = secrets.token_hex(6)
        work = prepared / "work"
        if work.exists():
            _remove_tree(work)
        os.rename(prepared, self.dir / snapshot)
        return snapshot

    @contextmanager
    def mount_writable(self, chain: list[str], prepared: Path) -> Iterator[Path]:
        """Mount `chain` with `prepared/fs` as the upper dir; yields the merged root."""
        target = prepared / "merged"
        target.mkdir(exist_ok=True)
        (prepared / "work").mkdir(exist_ok=True)
        mount_overlay(self._lowers(chain), prepared / "fs", prepared / "work", target)
        try:
            yield target
        finally:
            unmount(target)
            target.rmdir()

    @contextmanager
    def mount_readonly(self, chain: list[str]) -> Iterator[Path]:
        """A read-only view of `chain`."""
        if len(chain) == 1:
            yield self.path(chain[0])
            return
        target = self.tmp / f"ro-{secrets.token_hex(6)}"
        target.mkdir()
        lowers = self._lowers(chain)
        if len(lowers) == 1:
            lowers = lowers + [self._empty]
        mount_overlay(lowers, None, None, target)
        try:
            yield target
        finally:
            unmount(target)
            target.rmdir()

    def cleanup(self) -> None:
        """Remove this process's temp dir."""
        if self.tmp.exists():
            _remove_tree(self.tmp)


def _clean_stale(tmp: Path) -> None:
    """Unmount and remove what killed builds left in `tmp` (their process is gone; nothing trusts it)."""
    if not tmp.is_dir():
        return
    for entry in tmp.iterdir():
        pid = entry.name.split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: another build's scratch space
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        prefix = str(entry.resolve()) + "/"
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            unmount(Path(target))
        _remove_tree(entry)


def _remove_tree(path: Path) -> None:
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
