"""Snapshots: layers stored as overlayfs lower dirs under `ROOT/snapshots/<id>/fs`.

A new snapshot is prepared in a private temp dir (upper + work), filled through an overlay mount, and
renamed into `snapshots/` only once complete: a crash leaves at most a temp dir nobody trusts.

A manager holds the root's build lock (shared, `workbench.snapshot.lease`) from creation to `cleanup`, so
`workbench prune` waits for running builds; the kernel drops the lock of a killed build. Temp dirs of dead
builds (their mounts and runc containers included, `workbench.snapshot.scratch`) are cleaned when the next
build starts, and by prune.

A chain too deep for one overlay mount (the kernel stacks at most 500 lower dirs in one page of options)
is mounted over a flattened copy of its bottom: every `FLATTEN_EVERY` layers are merged, with the copy of
the layers below them, into one plain dir in the build's temp dir. It is the bottom of the stack, so it
needs no whiteouts; the layers a step writes are the same as over the full stack.

Where overlayfs cannot be mounted (some user namespaces) the copying snapshotter (`snapshot.copy`) does the
same without mounts: `$WORKBENCH_SNAPSHOTTER=copy`, or on its own when a rootless build's overlay mount is refused
(`use_copy_if_overlay_fails`, probed once per process).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.reaper import ensure_reaper
from workbench.rootless.diagnose import COPY_SLOWER
from workbench.rootless.userns import entered
from workbench.snapshot import copy as copysnap
from workbench.snapshot.lease import acquire_shared, release_shared
from workbench.snapshot.overlay import OverlayError, fits, mount_overlay, unmount
from workbench.snapshot.scratch import clean_stale, remove_tree

FLATTEN_EVERY = 128
SNAPSHOTTERS = ("overlay", "copy")
SNAPSHOTTER_ENV = "WORKBENCH_SNAPSHOTTER"
_chosen: list[str] = []  # what `use_copy_if_overlay_fails` settled for this process


def snapshotter() -> str:
    """`overlay` or `copy`: `$WORKBENCH_SNAPSHOTTER`, else what `use_copy_if_overlay_fails` found, else overlay."""
    name = os.environ.get(SNAPSHOTTER_ENV, "").strip()
    if name:
        if name not in SNAPSHOTTERS:
            raise OverlayError(f"{SNAPSHOTTER_ENV}={name!r}: unknown snapshotter; use one of {', '.join(SNAPSHOTTERS)}")
        return name
    return _chosen[-1] if _chosen else "overlay"


def use_copy_if_overlay_fails(scratch: Path) -> str | None:
    """Probe an overlay mount under `scratch` (in the namespace the engine builds in); when it fails, switch
    this process to the copying snapshotter and return the one line that says so (None when overlay works
    or `$WORKBENCH_SNAPSHOTTER` decides)."""
    if os.environ.get(SNAPSHOTTER_ENV, "").strip():
        return None
    why = copysnap.probe_overlay(scratch)
    if why is None:
        _chosen.append("overlay")
        return None
    _chosen.append("copy")
    return (f"overlayfs cannot be mounted here ({why}): using the copying snapshotter, {COPY_SLOWER} slower "
            f"(set {SNAPSHOTTER_ENV}=copy to choose it and skip this check)")


_said: list[str] = []


def _say_once(line: str) -> None:
    """The snapshotter's one line for this process (a build's stderr; the choice holds for the process)."""
    if not _said:
        _said.append(line)
        print(f"workbench: {line}", file=sys.stderr)


DUPLICATE_MARK = "duplicate"
"""A file in a snapshot dir (beside `fs`): the snapshot is a copy of a stored result, see `mark_duplicates`."""

class SnapshotManager:
    def __init__(self, root: Path) -> None:
        self._root = root
        acquire_shared(root)
        self._locked = True
        try:
            self.dir = root / "snapshots"
            self.dir.mkdir(parents=True, exist_ok=True)
            clean_stale(root / "tmp")
            self.tmp = root / "tmp" / f"{os.getpid()}-{secrets.token_hex(3)}"
            self.tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._empty = self.dir / "empty"
            self._empty.mkdir(exist_ok=True)
            self._flat: dict[str, Path] = {}
            self._flat_lock = threading.RLock()  # _flattened recurses
            if not _chosen and entered() is not None:  # rootless: a kernel or filesystem may refuse overlayfs
                if line := use_copy_if_overlay_fails(self.tmp):
                    _say_once(line)
            self.copying = snapshotter() == "copy"
            if self.copying and os.environ.get(SNAPSHOTTER_ENV, "").strip():
                _say_once(f"{SNAPSHOTTER_ENV}=copy: using the copying snapshotter, {COPY_SLOWER} slower than overlayfs")
            self._views = copysnap.Views(self.tmp / "views")
        except BaseException:
            release_shared(root)
            raise

    def path(self, snapshot: str) -> Path:
        return self.dir / snapshot / "fs"

    def exists(self, snapshot: str) -> bool:
        return self.path(snapshot).is_dir()

    def mark_duplicates(self, snapshots: list[str]) -> None:
        """Mark `snapshots` as a build's copies of results already stored (a `--no-cache` rebuild): no record
        will refer to them, and the automatic GC may leave them a while (workbench.gc.pruning.ORPHAN_GRACE)."""
        for s in snapshots:
            try:
                (self.dir / s / DUPLICATE_MARK).touch()
            except OSError:
                pass  # only an orphan removed sooner

    def _lowers(self, chain: list[str], upper: Path | None = None, work: Path | None = None) -> list[Path]:
        """The lower dirs to mount `chain` with: its layers, or over a flattened bottom when too deep."""
        lowers = self.lowers(chain) or [self._empty]
        cut = len(chain) - len(chain) % FLATTEN_EVERY
        if not cut or fits(lowers, upper, work):
            return lowers  # (a short chain that still does not fit fails to mount, with the reason)
        return self.lowers(chain[cut:]) + [self._flattened(chain[:cut])]

    def _flattened(self, chain: list[str]) -> Path:
        """A plain dir holding the merged view of `chain` (a multiple of `FLATTEN_EVERY` long), made once
        per build from the flattened copy of all but its top `FLATTEN_EVERY` layers."""
        name = f"{len(chain)}-{hashlib.sha256(':'.join(chain).encode()).hexdigest()[:16]}"
        with self._flat_lock:  # steps run in parallel; each flattened copy is made once
            done = self._flat.get(name)
            if done is not None:
                return done
            cut = len(chain) - FLATTEN_EVERY
            lowers = self.lowers(chain[cut:]) + ([self._flattened(chain[:cut])] if cut else [])
            dest = self.tmp / "flat" / name
            view = self.tmp / f"flat-view-{secrets.token_hex(6)}"
            (dest / "fs").mkdir(parents=True)
            view.mkdir()
            try:
                mount_overlay(lowers, None, None, view)
                try:
                    proc = subprocess.run(["cp", "-a", "--", f"{view}/.", str(dest / "fs")], capture_output=True,
                                          text=True, errors="replace")
                finally:
                    unmount(view)
                if proc.returncode != 0:
                    raise OverlayError(f"flattening {len(chain)} layers: {proc.stderr.strip()}")
            except BaseException:
                remove_tree(dest)
                raise
            finally:
                view.rmdir()
            self._flat[name] = dest / "fs"
            return dest / "fs"

    def lowers(self, chain: list[str]) -> list[Path]:
        """The snapshot dirs of `chain`, top first (as overlay's lowerdir lists them)."""
        return [self.path(s) for s in reversed(chain)]

    def guard(self) -> None:
        """Before this build mounts or starts anything: make sure a reaper will unmount and kill what it
        leaves if it dies (workbench.reaper). A fully cached build never gets this far, nor pays for it."""
        ensure_reaper(self.tmp.parent)

    @contextmanager
    def prepare(self) -> Iterator[Path]:
        """A fresh, empty snapshot dir to fill; use `commit` to keep it. Removed if not committed."""
        self.guard()
        work = Path(self.tmp / f"new-{secrets.token_hex(6)}")
        work.mkdir(mode=0o700)  # becomes snapshots/<id>: private; fs below keeps the mode a layer's root has
        (work / "fs").mkdir()
        try:
            yield work
        finally:
            self._views.discard(work)
            if work.exists():
                remove_tree(work)

    def commit(self, prepared: Path) -> str:
        """Move a prepared snapshot into place and return its id."""
        snapshot = secrets.token_hex(6)
        work = prepared / "work"
        if work.exists():
            remove_tree(work)
        os.rename(prepared, self.dir / snapshot)
        self._views.committed(prepared, snapshot)
        return snapshot

    @contextmanager
    def mount_writable(self, chain: list[str], prepared: Path) -> Iterator[Path]:
        """Mount `chain` with `prepared/fs` as the upper dir; yields the merged root."""
        self.guard()
        target = prepared / "merged"
        target.mkdir(exist_ok=True)
        if self.copying:
            with self._views.writable(chain, self.lowers(chain), target, prepared / "fs"):
                yield target
            return
        (prepared / "work").mkdir(exist_ok=True)
        mount_overlay(self._lowers(chain, prepared / "fs", prepared / "work"), prepared / "fs", prepared / "work",
                      target)
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
        self.guard()
        target = self.tmp / f"ro-{secrets.token_hex(6)}"
        target.mkdir()
        if self.copying:
            with self._views.readonly(chain, self.lowers(chain), target) as view:
                yield view
            return
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
        """Remove this process's temp dir and release the build lock."""
        try:
            if self.tmp.exists():
                remove_tree(self.tmp)
        finally:
            if self._locked:
                self._locked = False
                release_shared(self._root)

