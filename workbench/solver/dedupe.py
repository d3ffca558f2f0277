"""One execution per cache key across concurrent builds (threads or processes) sharing a state root.

A build about to run a step takes an exclusive flock on `ROOT/locks/<key>`; a second build reaching the
same key waits, then finds the result in the store and reuses it. Locks are released by the kernel if a
holder dies, and lock files are unlinked by their holder (a waiter that wakes on an unlinked file
retries on the new one).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Canceled(Exception):
    """The build was canceled while waiting for another build's step."""


@contextmanager
def key_lock(root: Path, name: str, cancel: threading.Event, on_wait: object = None) -> Iterator[bool]:
    """Hold the lock for `name`; yields whether we had to wait for another holder first."""
    locks = root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / (hashlib.sha256(name.encode()).hexdigest()[:40] + ".lock")
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited and callable(on_wait):
                        on_wait()
                    waited = True
                    if cancel.is_set():
                        raise Canceled() from None
                    time.sleep(0.02)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder before us unlinked it: lock the current file instead
    try:
        yield waited
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)
