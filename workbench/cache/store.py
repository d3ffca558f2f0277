"""The persistent cache store: cache key → result (a chain of snapshot ids), layer blobs, miss history.

SQLite in WAL mode so several `workbench build` processes can share one root. A record is written only
after its snapshot is complete and renamed into place, so a killed build never leaves a record that a
later build would trust; `workbench.cache.gc` deletes a record before its files, so a crash there leaves
orphan files, never a record pointing at nothing. A record whose snapshots are gone anyway (deleted by
hand) is replaced by the next `record` of its key instead of winning over the new, complete result.

A corrupt `cache.db` (not an SQLite file, or a damaged page) is found when it is opened (its header and
schema are read) or when a query fails as corrupt (`PRAGMA quick_check` confirms it): it is moved aside
as `cache.db.corrupt-<time>` (with its -wal and -shm), an empty index takes its place and the build goes
on after a one-line warning. Only the index is lost: the snapshots it referred to are orphans that the
next GC (`workbench.cache.gc`, after any build that ran a step) or `workbench prune` removes.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_blobs (
    snapshot TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_blob_variants (
    snapshot TEXT NOT NULL,
    media_type TEXT NOT NULL,
    diff_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (snapshot, media_type)
);
CREATE TABLE IF NOT EXISTS lineage (
    lineage TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    components TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_sizes (
    snapshot TEXT PRIMARY KEY,
    size INTEGER NOT NULL
);
"""

_HEADER = b"SQLite format 3\x00"
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes: the low byte of extended ones)


# -- corruption ---------------------------------------------------------------------------------------------


def is_corruption(e: BaseException) -> bool:
    """Whether `e` is SQLite saying the file is damaged or not a database (not busy, full or I/O)."""
    return isinstance(e, sqlite3.DatabaseError) and (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF in _CORRUPT_CODES


def _header_problem(path: Path) -> str | None:
    """What is wrong with the first bytes of `path` (cheap: one read), None if they look like SQLite's."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return None
    if not head:
        return None  # a new, empty database
    if len(head) < 100 or not head.startswith(_HEADER):
        return "file is not a database"
    return None


def integrity_problem(path: Path) -> str | None:
    """What is wrong with the database at `path` (header, schema, then `PRAGMA quick_check`); None when it is
    healthy or absent. Reads only; OSError / sqlite3.OperationalError when it cannot be read at all."""
    problem = _header_problem(path)
    if problem is not None or not path.exists():
        return problem
    db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=60, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=60000")
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as e:
        if not is_corruption(e):
            raise
        return str(e)
    finally:
        db.close()
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "; ".join(found[:3])


def quarantine(path: Path) -> Path:
    """Move the database at `path` and its -wal/-shm aside as `<name>.corrupt-<time>[-wal|-shm]`; returns where."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(os.path.lexists(f"{dest}{s}") for s in ("", "-wal", "-shm")):
        n += 1
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.rename(path, dest)
    for suffix in ("-wal", "-shm"):
        try:
            os.rename(f"{path}{suffix}", f"{dest}{suffix}")
        except FileNotFoundError:
            pass
    return dest


@contextmanager
def _recovery_lock(directory: Path) -> Iterator[None]:
    """Serialise recoveries of one root's index across processes (an flock on the root dir itself)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


# -- records ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerBlob:
    """The compressed blob of one snapshot, as it goes into an image manifest."""

    diff_id: str
    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class StoredResult:
    """One `results` row: a cache key and the snapshot chain it stands for."""

    key: str
    chain: list[str]
    description: str
    created: float
    last_used: float


class CacheStore:
    """Thread-safe access to `cache.db` under the build root; a corrupt one is moved aside (see module doc)."""

    def __init__(self, path: Path, warn: Callable[[str], None] = _warn, snapshot_read: bool = False) -> None:
        """`snapshot_read`: only read the main file as it is (no WAL, no -shm, nothing created or repaired),
        for estimates on a full disk; it may miss the latest records and fails on corruption."""
        self._path = path
        self._warn = warn
        self._lock = threading.Lock()
        self._snapshots = path.parent / "snapshots"
        self._repair = not snapshot_read
        if snapshot_read:
            self._db = sqlite3.connect(f"file:{path}?immutable=1", uri=True, check_same_thread=False,
                                       isolation_level=None)
            self._inode = (0, 0)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            problem = _header_problem(path)
            if problem is not None:
                self._recover(problem, None)
            try:
                self._db = self._connect()
            except sqlite3.DatabaseError as e:
                if not is_corruption(e):
                    raise
                self._recover(str(e), None)
                self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            # Switching to WAL and creating tables can answer "locked" at once, without waiting, while
            # another process opens the same store: retry for a while.
            for attempt in range(200):
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e) or attempt == 199:
                        raise
                    time.sleep(0.05)
            st = os.stat(self._path)
        except BaseException:
            db.close()
            raise
        self._inode = (st.st_dev, st.st_ino)
        return db

    def _recover(self, problem: str, connected: tuple[int, int] | None) -> bool:
        """Move a corrupt index aside (unless another process already did); False when the file at the path
        is the one `connected` to and healthy after all (the failure was not corruption)."""
        with _recovery_lock(self._path.parent):
            try:
                st = os.stat(self._path)
                current: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                current = None
            found = integrity_problem(self._path) if current is not None else None
            if found is None:
                return current != connected  # replaced meanwhile: reconnecting is all there is to do
            moved = quarantine(self._path)
        self._warn(f"the cache index {self._path} was corrupt ({problem or found}): moved it aside to "
                   f"{moved.name} and started an empty one (cached results are rebuilt)")
        return True

    @property
    def identity(self) -> tuple[int, int]:
        """The index file now in use (device, inode): it changes when a corrupt one was moved aside, so a reader
        of several queries can tell that the earlier ones read the old index."""
        return self._inode

    def _q(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn` on the database under the lock; on corruption, recover and run it once more on a new index."""
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.DatabaseError as e:
                if not is_corruption(e) or not self._repair:
                    raise
                connected = self._inode
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                recovered = self._recover(str(e), connected)
                self._db = self._connect()
                if not recovered:
                    raise
            return fn(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def lookup(self, key: str) -> list[str] | None:
        """The snapshot chain stored for `key`, bottom layer first, or None. A hit counts as a use (for GC)."""
        now = time.time()

        def q(db: sqlite3.Connection) -> tuple[str, float] | None:
            row = db.execute("SELECT chain, last_used FROM results WHERE key=?", (key,)).fetchone()
            if row is not None and row[1] < now:
                db.execute("UPDATE results SET last_used=? WHERE key=?", (now, key))
            return row

        row = self._q(q)
        if row is None:
            return None
        return list(json.loads(row[0]))

    def peek(self, key: str) -> list[str] | None:
        """`lookup` without counting a use: for looking ahead (a prediction), which must change nothing."""
        row = self._q(lambda db: db.execute("SELECT chain FROM results WHERE key=?", (key,)).fetchone())
        return None if row is None else list(json.loads(row[0]))

    def _complete(self, chain: list[str]) -> bool:
        """Whether every snapshot of `chain` is on disk (always true for a store without a snapshots dir)."""
        if not self._snapshots.is_dir():
            return True
        return all((self._snapshots / s / "fs").is_dir() for s in chain)

    def touch(self, keys: list[str]) -> None:
        now = time.time()
        self._q(lambda db: db.executemany("UPDATE results SET last_used=? WHERE key=?", [(now, k) for k in keys]))

    def record(self, key: str, chain: list[str], description: str = "") -> list[str]:
        """Store `chain` for `key`; if another build stored one first, keep and return that one (unless its
        snapshots are missing: then `chain` replaces it)."""
        now = time.time()

        def q(db: sqlite3.Connection) -> list[str]:
            db.execute(
                "INSERT OR IGNORE INTO results (key, chain, description, created, last_used) VALUES (?,?,?,?,?)",
                (key, json.dumps(chain), description, now, now),
            )
            row = db.execute("SELECT chain FROM results WHERE key=?", (key,)).fetchone()
            stored = list(json.loads(row[0]))
            if stored != chain and not self._complete(stored) and self._complete(chain):
                db.execute(
                    "UPDATE results SET chain=?, description=?, created=?, last_used=? WHERE key=?",
                    (json.dumps(chain), description, now, now, key),
                )
                stored = chain
            return stored

        return self._q(q)

    def layer_blob(self, snapshot: str) -> LayerBlob | None:
        row = self._q(lambda db: db.execute(
            "SELECT diff_id, digest, size, media_type FROM layer_blobs WHERE snapshot=?", (snapshot,)
        ).fetchone())
        return LayerBlob(*row) if row else None

    def layer_blob_variant(self, snapshot: str, media_type: str) -> LayerBlob | None:
        """The blob of `snapshot` compressed as `media_type` (zstd, uncompressed) by an export, if remembered."""
        row = self._q(lambda db: db.execute(
            "SELECT diff_id, digest, size, media_type FROM layer_blob_variants WHERE snapshot=? AND media_type=?",
            (snapshot, media_type)).fetchone())
        return LayerBlob(*row) if row else None

    def record_layer_blob_variant(self, snapshot: str, blob: LayerBlob) -> None:
        """Remember a blob of `snapshot` in another compression than its `layer_blob` (one per media type)."""
        self._q(lambda db: db.execute(
            "INSERT OR REPLACE INTO layer_blob_variants (snapshot, media_type, diff_id, digest, size) "
            "VALUES (?,?,?,?,?)", (snapshot, blob.media_type, blob.diff_id, blob.digest, blob.size)))

    def layer_blob_variants(self) -> list[tuple[str, LayerBlob]]:
        """Every remembered (snapshot, blob) in another compression than the snapshot's `layer_blob`."""
        rows = self._q(lambda db: db.execute(
            "SELECT snapshot, diff_id, digest, size, media_type FROM layer_blob_variants").fetchall())
        return [(r[0], LayerBlob(*r[1:])) for r in rows]

    def record_layer_blob(self, snapshot: str, blob: LayerBlob) -> None:
        self._q(lambda db: db.execute(
            "INSERT OR REPLACE INTO layer_blobs (snapshot, diff_id, digest, size, media_type) VALUES (?,?,?,?,?)",
            (snapshot, blob.diff_id, blob.digest, blob.size, blob.media_type),
        ))

    def last_lineage(self, lineage: str) -> tuple[str, dict[str, object]] | None:
        """The key and key components the step at `lineage` had last time it was solved."""
        row = self._q(lambda db: db.execute(
            "SELECT key, components FROM lineage WHERE lineage=?", (lineage,)).fetchone())
        return (row[0], json.loads(row[1])) if row else None

    def record_lineage(self, lineage: str, key: str, components: dict[str, object]) -> None:
        self._q(lambda db: db.execute(
            "INSERT OR REPLACE INTO lineage (lineage, key, components) VALUES (?,?,?)",
            (lineage, key, json.dumps(components, sort_keys=True)),
        ))

    # -- disk management (workbench.cache.gc) -------------------------------------------------------

    def results(self) -> list[StoredResult]:
        """Every result record."""
        rows = self._q(lambda db: db.execute(
            "SELECT key, chain, description, created, last_used FROM results").fetchall())
        return [StoredResult(k, list(json.loads(c)), d, cr, lu) for k, c, d, cr, lu in rows]

    def layer_blobs(self) -> dict[str, LayerBlob]:
        """Every snapshot's recorded layer blob, by snapshot id."""
        rows = self._q(lambda db: db.execute(
            "SELECT snapshot, diff_id, digest, size, media_type FROM layer_blobs").fetchall())
        return {r[0]: LayerBlob(*r[1:]) for r in rows}

    def snapshot_sizes(self) -> dict[str, int]:
        """Remembered disk usage of snapshots (they never change once committed)."""
        return dict(self._q(lambda db: db.execute("SELECT snapshot, size FROM snapshot_sizes").fetchall()))

    def record_snapshot_sizes(self, sizes: dict[str, int]) -> None:
        self._q(lambda db: db.executemany("INSERT OR REPLACE INTO snapshot_sizes (snapshot, size) VALUES (?,?)",
                                          list(sizes.items())))

    def forget(self, keys: list[str], snapshots: list[str]) -> None:
        """Delete the records `keys` and what is known about `snapshots`, in one transaction (before the files)."""

        def q(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM results WHERE key=?", [(k,) for k in keys])
                db.executemany("DELETE FROM layer_blobs WHERE snapshot=?", [(s,) for s in snapshots])
                db.executemany("DELETE FROM layer_blob_variants WHERE snapshot=?", [(s,) for s in snapshots])
                db.executemany("DELETE FROM snapshot_sizes WHERE snapshot=?", [(s,) for s in snapshots])
            except BaseException:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            db.execute("COMMIT")

        self._q(q)
