"""A build's results after the fact: a step's files, mounted read-only from its snapshot chain while a view is
open, the chain the cache store keeps for a step, and a shell on a throw-away layer over a finished step.

Each opens a worker of its own on the build root (it holds the root's lock, so a prune waits, and does not
depend on any build's worker staying alive); `workbench.engine.LocalEngine` hands these out to the front ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.snapshot.manager import SnapshotManager
    from workbench.worker import Worker


class ViewError(Exception):
    """What cannot be shown: a path (missing, not a file, not a directory) or a result no longer stored."""


@dataclass(frozen=True)
class ShellConfig:
    """How a shell in a finished step's filesystem runs: the env, working directory and user of its image
    config at that step, where known (else BuildKit's defaults)."""

    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""


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


def step_chain(root: Path, cache_key: str) -> list[str] | None:
    """The snapshot chain the cache store of `root` keeps for a step's cache key (None: not kept)."""
    from workbench.worker import Worker

    worker = Worker(root)
    try:
        return worker.store.lookup(cache_key)
    finally:
        worker.close()


def step_shell(root: Path, cache_key: str, argv: list[str], config: ShellConfig,
               on_start: Callable[[Callable[[], None]], None]) -> int:
    """Run `argv` on this process's terminal in a container on a throw-away writable layer over a finished
    step's filesystem (as `docker buildx debug --invoke`); its exit code. Nothing it does is kept, and nothing
    stays mounted or running once it returns. `on_start` gets a function that kills the container (a hang-up).
    ViewError when the result is gone or the program is not in its filesystem."""
    from workbench.executor.runc import ExecError
    from workbench.executor.spec import ExecSpec, with_default_path
    from workbench.worker import Worker

    worker = Worker(root)
    try:
        chain = worker.store.lookup(cache_key)
        if chain is None:
            raise ViewError(f"the step's result ({cache_key[:19]}) is no longer in the cache of {worker.root}")
        missing = [s for s in chain if not worker.snapshots.exists(s)]
        if missing:
            raise ViewError(f"snapshot {missing[0]} is gone from {worker.root} (pruned?)")
        spec = ExecSpec(args=list(argv), env=with_default_path(list(config.env)), cwd=config.cwd or "/",
                        user=config.user)
        with worker.snapshots.prepare() as prepared, worker.snapshots.mount_writable(chain, prepared) as rootfs:
            try:
                return worker.run_interactive(rootfs, spec, on_start)
            except ExecError as e:
                raise ViewError(str(e)) from None
    finally:
        worker.close()
