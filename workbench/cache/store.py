"""The persistent cache store: cache key → result (a chain of snapshot ids), layer blobs, miss history.

SQLite in WAL mode so several `workbench build` processes can share one root. A record is written only
after its snapshot is complete and renamed into place, so a killed build never leaves a record that a
later build would trust; `workbench.cache.gc` deletes a record before its files, so a crash there leaves
orphan files, never a record pointing at nothing. A record whose snapshots are gone anyway (deleted by
hand) is replaced by the next `record` of its key instead of winning over the new, complete result.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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
    """Thread-safe access to `cache.db` under the build root."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._snapshots = path.parent / "snapshots"
        with self._lock:
            self._db.execute("PRAGMA busy_timeout=60000")
            # Switching to WAL and creating tables can answer "locked" at once, without waiting, while
            # another process opens the same store: retry for a while.
            for attempt in range(200):
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")
                    self._db.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e) or attempt == 199:
                        raise
                    time.sleep(0.05)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def lookup(self, key: str) -> list[str] | None:
        """The snapshot chain stored for `key`, bottom layer first, or None. A hit counts as a use (for GC)."""
        now = time.time()
        with self._lock:
            row = self._db.execute("SELECT chain, last_used FROM results WHERE key=?", (key,)).fetchone()
            if row is not None and row[1] < now:
                self._db.execute("UPDATE results SET last_used=? WHERE key=?", (now, key))
        if row is None:
            return None
        return list(json.loads(row[0]))

    def _complete(self, chain: list[str]) -> bool:
        """Whether every snapshot of `chain` is on disk (always true for a store without a snapshots dir)."""
        if not self._snapshots.is_dir():
            return True
        return all((self._snapshots / s / "fs").is_dir() for s in chain)

    def touch(self, keys: list[str]) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany("UPDATE results SET last_used=? WHERE key=?", [(now, k) for k in keys])

    def record(self, key: str, chain: list[str], description: str = "") -> list[str]:
        """Store `chain` for `key`; if another build stored one first, keep and return that one (unless its
        snapshots are missing: then `chain` replaces it)."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO results (key, chain, description, created, last_used) VALUES (?,?,?,?,?)",
                (key, json.dumps(chain), description, now, now),
            )
            row = self._db.execute("SELECT chain FROM results WHERE key=?", (key,)).fetchone()
            stored = list(json.loads(row[0]))
            if stored != chain and not self._complete(stored) and self._complete(chain):
                self._db.execute(
                    "UPDATE results SET chain=?, description=?, created=?, last_used=? WHERE key=?",
                    (json.dumps(chain), description, now, now, key),
                )
                stored = chain
        return stored

    def layer_blob(self, snapshot: str) -> LayerBlob | None:
        with self._lock:
            row = self._db.execute(
                "SELECT diff_id, digest, size, media_type FROM layer_blobs WHERE snapshot=?", (snapshot,)
            ).fetchone()
        return LayerBlob(*row) if row else None

    def record_layer_blob(self, snapshot: str, blob: LayerBlob) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO layer_blobs (snapshot, diff_id, digest, size, media_type) VALUES (?,?,?,?,?)",
                (snapshot, blob.diff_id, blob.digest, blob.size, blob.media_type),
            )

    def last_lineage(self, lineage: str) -> tuple[str, dict[str, object]] | None:
        """The key and key components the step at `lineage` had last time it was solved."""
        with self._lock:
            row = self._db.execute("SELECT key, components FROM lineage WHERE lineage=?", (lineage,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def record_lineage(self, lineage: str, key: str, components: dict[str, object]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO lineage (lineage, key, components) VALUES (?,?,?)",
                (lineage, key, json.dumps(components, sort_keys=True)),
            )

    # -- disk management (workbench.cache.gc) -------------------------------------------------------

    def results(self) -> list[StoredResult]:
        """Every result record."""
        with self._lock:
            rows = self._db.execute("SELECT key, chain, description, created, last_used FROM results").fetchall()
        return [StoredResult(k, list(json.loads(c)), d, cr, lu) for k, c, d, cr, lu in rows]

    def layer_blobs(self) -> dict[str, LayerBlob]:
        """Every snapshot's recorded layer blob, by snapshot id."""
        with self._lock:
            rows = self._db.execute("SELECT snapshot, diff_id, digest, size, media_type FROM layer_blobs").fetchall()
        return {r[0]: LayerBlob(*r[1:]) for r in rows}

    def snapshot_sizes(self) -> dict[str, int]:
        """Remembered disk usage of snapshots (they never change once committed)."""
        with self._lock:
            return dict(self._db.execute("SELECT snapshot, size FROM snapshot_sizes").fetchall())

    def record_snapshot_sizes(self, sizes: dict[str, int]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO snapshot_sizes (snapshot, size) VALUES (?,?)",
                                 list(sizes.items()))

    def forget(self, keys: list[str], snapshots: list[str]) -> None:
        """Delete the records `keys` and what is known about `snapshots`, in one transaction (before the files)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM results WHERE key=?", [(k,) for k in keys])
                self._db.executemany("DELETE FROM layer_blobs WHERE snapshot=?", [(s,) for s in snapshots])
                self._db.executemany("DELETE FROM snapshot_sizes WHERE snapshot=?", [(s,) for s in snapshots])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
