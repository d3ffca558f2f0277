"""A full disk under the build root, told in one line: `no space left on device under ROOT: N MB free;
workbench prune frees M MB`.

A build meets a full disk in many places -- SQLite (`database or disk is full`, or `disk I/O error` when
the WAL cannot grow), a snapshot or blob being written (`OSError` ENOSPC, raw or already turned into a
step's error text), the history recorder, or a step's own process writing into its overlay (the step just
fails; its log says `No space left on device` while the disk is full). `DiskFullWatch` watches a build's
logs for the last case and `message` turns any of them into the line; the CLI prints it instead of the
error or traceback. Nothing half-written is left behind by construction elsewhere (snapshots and blobs are
renamed into place complete, records are written after them, SQLite rolls back a failed write).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from pathlib import Path

_MB = 1_000_000
_NEARLY_FULL = 1 << 20  # bytes: less than this available counts as full (a few blocks may remain)
_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")
_SQLITE_FULL = 13
_SQLITE_IOERR = 10


def _statvfs(root: Path) -> os.statvfs_result | None:
    """The filesystem figures for `root` (or its nearest existing parent); None when they cannot be read."""
    path = Path(os.path.abspath(root))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return os.statvfs(path)
    except OSError:
        return None


def free_bytes(root: Path) -> int | None:
    """Bytes available to us on the filesystem holding `root` (or its nearest existing parent)."""
    st = _statvfs(root)
    return None if st is None else st.f_bavail * st.f_frsize


def nearly_full(root: Path) -> bool:
    """Whether the filesystem of `root` has (almost) no space or no inodes left."""
    st = _statvfs(root)
    if st is None:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL or (st.f_files > 0 and st.f_favail == 0)


def _chain(e: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in seen and len(seen) < 20:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def is_disk_full(e: BaseException, root: Path) -> bool:
    """Whether `e` (or an error it was raised from or while handling) is a full disk or quota."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(x, sqlite3.OperationalError):
            code = (getattr(x, "sqlite_errorcode", 0) or 0) & 0xFF
            if code == _SQLITE_FULL or code == _SQLITE_IOERR and nearly_full(root):
                return True
        text = str(getattr(x, "message", "") or x).lower()
        if any(t in text for t in _TEXTS):
            return True
    return False


def message(root: Path) -> str:
    """The one line: what is free under `root` and what `workbench prune` would free."""
    free = free_bytes(root)
    try:
        from workbench.gc import prunable

        reclaim: int | None = prunable(root)
    except (OSError, sqlite3.Error):
        reclaim = None
    have = f"{free / _MB:.0f} MB free" if free is not None else "free space unknown"
    frees = f"workbench prune frees {reclaim / _MB:.0f} MB" if reclaim is not None else "try workbench prune"
    return f"no space left on device under {os.path.abspath(root)}: {have}; {frees}"


class DiskFullWatch:
    """A bus sink that notes a step writing into a full disk under `root` (its log says so while the disk
    has no space left); `message_for` then tells a failure caused by a full disk apart from others."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen = False
        self._tails: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, event: object) -> None:
        data = getattr(event, "data", None)
        if self.seen or not isinstance(data, bytes) or not hasattr(event, "stream"):
            return
        vertex = str(getattr(event, "vertex", ""))
        with self._lock:
            text = (self._tails.get(vertex, b"") + data).lower()
            self._tails[vertex] = text[-64:]  # a message split across chunks
        if any(t.encode() in text for t in _TEXTS) and nearly_full(self.root):
            self.seen = True

    def message_for(self, e: BaseException) -> str | None:
        """The disk-full line when `e` comes from a full disk under the root, else None."""
        if self.seen or is_disk_full(e, self.root):
            return message(self.root)
        return None
