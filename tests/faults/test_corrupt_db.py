"""A corrupt `ROOT/cache.db` (garbage, truncated, damaged mid-file): the next build moves it aside with a
one-line warning, starts an empty index and succeeds; the GC removes the snapshots only the old index knew;
the build after that is fully cached and quiet."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import cached_count, wb

DOCKERFILE = "FROM localhost:5055/busybox\nRUN echo one > /one\nCOPY f.txt /f.txt\n"
WARNING = re.compile(r"^WARNING: the cache index .*cache\.db was corrupt \((.+)\): moved it aside to "
                     r"cache\.db\.corrupt-\S+ and started an empty one.*$", re.MULTILINE)


def _project(tmp_path: Path, text: str = "v1\n") -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "f.txt").write_text(text)
    return ctx


def _snapshots(root: Path) -> set[str]:
    return {p.name for p in (root / "snapshots").iterdir() if p.name != "empty"}



def _checkpoint(root: Path) -> None:
    """Fold the WAL into cache.db, so that damage to the file is damage to the data."""
    db = sqlite3.connect(root / "cache.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{root / 'cache.db'}{suffix}").unlink(missing_ok=True)


def _recovers(ctx: Path, root: Path, damaged: bytes, before: set[str]) -> None:
    """The build after the damage: one warning line, the bad file aside, old snapshots collected; then quiet."""
    proc = wb(str(ctx), root=root)
    assert "Traceback" not in proc.stderr
    warnings = WARNING.findall(proc.stderr)
    assert len(warnings) == 1, proc.stderr[-3000:]
    main = [p for p in root.glob("cache.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(main) == 1 and main[0].read_bytes() == damaged
    # snapshots only the lost index referred to are garbage now, and the GC after the build removed them
    assert not before & _snapshots(root)
    again = wb(str(ctx), root=root)
    assert "WARNING" not in again.stderr and "corrupt" not in again.stderr
    assert cached_count(again.stderr) == 3, again.stderr[-3000:]


@pytest.mark.parametrize("damage", ["garbage", "truncated-header", "empty-pages"])
def test_corrupt_index_is_moved_aside(registry: str, root: Path, tmp_path: Path, damage: str) -> None:
    ctx = _project(tmp_path)
    wb(str(ctx), root=root)
    _checkpoint(root)
    before = _snapshots(root)
    db = root / "cache.db"
    good = db.read_bytes()
    if damage == "garbage":
        bad = os.urandom(3000)
    elif damage == "truncated-header":
        bad = good[:40]
    else:  # the header page intact, every other page zeroed: the schema reads, the tables do not
        bad = good[:4096] + bytes(len(good) - 4096)
    db.write_bytes(bad)
    _recovers(ctx, root, bad, before)


def test_index_damaged_mid_file(registry: str, root: Path, tmp_path: Path) -> None:
    """One page in the middle of a big index is garbage: found when a query reads it (quick_check agrees)."""
    ctx = _project(tmp_path)
    wb(str(ctx), root=root)
    db = sqlite3.connect(root / "cache.db")
    db.executemany("INSERT INTO results (key, chain, description, created, last_used) VALUES (?,?,?,?,?)",
                   [(f"sha256:{i:064x}", '["gone"]', "filler " * 20, 1.0, 1.0) for i in range(3000)])
    db.commit()
    db.close()
    _checkpoint(root)
    before = _snapshots(root)
    path = root / "cache.db"
    data = bytearray(path.read_bytes())
    assert len(data) > 40 * 4096
    middle = len(data) // 4096 // 2 * 4096
    data[middle:middle + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))
    # a changed file makes the build run a step, and every build that runs one is followed by the GC, which
    # reads every record: the damaged page cannot be missed
    ctx = _project(tmp_path, "v2\n")
    proc = wb(str(ctx), root=root)
    assert "Traceback" not in proc.stderr
    assert len(WARNING.findall(proc.stderr)) == 1, proc.stderr[-3000:]
    assert "malformed" in WARNING.findall(proc.stderr)[0]
    assert len([p for p in root.glob("cache.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]) == 1
    assert not before & _snapshots(root)
    # found late (after the build recorded into the damaged file), the build's records went with it: the
    # next build runs again, into the new index, and the one after is fully cached
    for _ in range(2):
        again = wb(str(ctx), root=root)
        assert "WARNING" not in again.stderr and "Traceback" not in again.stderr
    assert cached_count(again.stderr) == 3
