"""Read-only views of a build's results: a step's files, mounted from its snapshot chain while a view is open.

A view opens a worker of its own on the build root (it holds the root's lock, so a prune waits, and does not
depend on any build's worker staying alive); `workbench.engine.LocalEngine` hands these out to the front ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.snapshot.manager import SnapshotManager
    from workbench.worker import Worker


class ViewError(Exception):
    """What cannot be shown: a path (missing, not a file, not a directory) or a result no longer stored."""


@contextmanager
def mounted(worker: Worker, chain: list[str]) -> Iterator[Path]:
    """A read-only view of a snapshot chain (an empty directory for `scratch`)."""
    with mounted_snapshots(worker.snapshots, chain) as root:
        yield root


@contextmanager
def mounted_snapshots(snapshots: SnapshotManager, chain: list[str]) -> Iterator[Path]:
    """`mounted` with any snapshot manager of the build root (a solver's, or one opened after its build)."""
    if not chain:
        empty = snapshots.tmp / "empty-view"
        empty.mkdir(parents=True, exist_ok=True)
        yield empty
        return
    with snapshots.mount_readonly(chain) as root:
        yield root


@contextmanager
def chain_view(root: Path, chain: list[str]) -> Iterator[Path]:
    """A read-only view of snapshot chain `chain` of build root `root` (a paused step's input, say)."""
    from workbench.worker import Worker

    worker = Worker(root)
    try:
        with _chain_view(worker, chain) as view:
            yield view
    finally:
        worker.close()


@contextmanager
def step_view(root: Path, cache_key: str) -> Iterator[Path]:
    """A read-only view of a finished step's filesystem after its build: the chain the cache store keeps for
    the step's cache key."""
    from workbench.worker import Worker

    worker = Worker(root)
    try:
        chain = worker.store.lookup(cache_key)
        if chain is None:
            raise ViewError(f"the step's result ({cache_key[:19]}) is no longer in the cache of {worker.root}")
        with _chain_view(worker, chain) as view:
            yield view
    finally:
        worker.close()


@contextmanager
def _chain_view(worker: Worker, chain: list[str]) -> Iterator[Path]:
    missing = [s for s in chain if not worker.snapshots.exists(s)]
    if missing:
        raise ViewError(f"snapshot {missing[0]} is gone from {worker.root} (pruned?)")
    with mounted(worker, chain) as view:
        yield view
