"""The build lock of a state root (`ROOT/lock`), shared by builds and taken exclusively by GC.

A build holds the lock shared (flock, so the kernel drops it when a build is killed) for its whole
duration -- `SnapshotManager` takes it, `build_lock` is the same for other callers -- and leaves a lease
file (`ROOT/leases/<pid>-…`, its start time) so GC can tell which records running builds may use.
Prune takes the lock exclusively (waiting for running builds); automatic GC tries without waiting.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.snapshot.scratch import stale_entry
from workbench.state_root import write_private

LEASES = "leases"  # ROOT/leases: one file per process holding the lock shared


@dataclass
class _Hold:
    fd: int
    count: int
    lease: Path


_held: dict[str, _Hold] = {}
_held_lock = threading.Lock()


def _lock_fd(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    return os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def acquire_shared(root: Path) -> None:
    """Take this process's shared hold on `root`'s build lock (waits while a prune runs); counted."""
    key = os.path.realpath(root)
    with _held_lock:
        hold = _held.get(key)
        if hold is not None:
            hold.count += 1
            return
    fd = _lock_fd(root)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    with _held_lock:
        hold = _held.get(key)
        if hold is not None:  # another thread got there first
            hold.count += 1
            os.close(fd)
            return
        lease = root / LEASES / f"{os.getpid()}-{secrets.token_hex(4)}"
        lease.parent.mkdir(mode=0o700, exist_ok=True)
        write_private(lease, json.dumps({"pid": os.getpid(), "started": time.time()}))
        _held[key] = _Hold(fd, 1, lease)


def release_shared(root: Path) -> None:
    """Drop one hold taken by `acquire_shared`; the last one releases the lock."""
    key = os.path.realpath(root)
    with _held_lock:
        hold = _held.get(key)
        if hold is None:
            return
        hold.count -= 1
        if hold.count > 0:
            return
        del _held[key]
    hold.lease.unlink(missing_ok=True)
    os.close(hold.fd)  # closing the only descriptor releases the flock


@contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """Hold `root` for a build: prune waits until the block ends; a killed process releases it."""
    acquire_shared(root)
    try:
        yield
    finally:
        release_shared(root)


@contextmanager
def exclusive_lock(root: Path, wait: bool = True) -> Iterator[bool]:
    """Hold `root` exclusively (no build runs meanwhile); yields False if `wait` is off and builds run.

    A process that itself holds the build lock (once) converts its lock when nothing else runs.
    """
    key = os.path.realpath(root)
    with _held_lock:
        hold = _held.get(key)
    if hold is not None:
        if wait:
            raise RuntimeError(f"cannot prune {root} exclusively while this process is building in it")
        if hold.count > 1:
            yield False
            return
        try:
            fcntl.flock(hold.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            got = True
        except BlockingIOError:
            got = False
        try:
            yield got
        finally:
            fcntl.flock(hold.fd, fcntl.LOCK_SH)  # a failed conversion may have dropped the shared lock
        return
    fd = _lock_fd(root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def running_since(root: Path) -> float | None:
    """When the oldest running build on `root` started, None if none runs."""
    starts: list[float] = []
    leases = root / LEASES
    if not leases.is_dir():
        return None
    for entry in leases.iterdir():
        if stale_entry(entry):
            continue
        try:
            starts.append(float(json.loads(entry.read_text())["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return min(starts) if starts else None
