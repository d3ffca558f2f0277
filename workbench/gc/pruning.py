"""Removing cache: `prune`, automatic GC under a size cap (`maybe_gc`), and orphans only.

Deletion removes records first (one transaction) and files after, so a crash mid-prune leaves orphans
and never a record pointing at nothing. Doomed files are renamed into a trash dir under ROOT/tmp first:
they vanish at once, and a crash leaves only a stale temp dir.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from workbench.cache.store import CacheStore
from workbench.gc.content import blob_dir
from workbench.gc.model import PruneResult, Record, Usage
from workbench.gc.units import parse_size
from workbench.gc.usage import scan
from workbench.image.store import referenced_blobs
from workbench.snapshot.lease import exclusive_lock
from workbench.snapshot.overlay import unmount
from workbench.snapshot.scratch import mounts_under, remove_scratch, remove_tree

DEFAULT_CAP_FALLBACK = 2_000_000_000


def _trash(root: Path) -> Path:
    """A temp dir to move doomed files into: they vanish at once, and a crash leaves a stale temp dir."""
    t = root / "tmp" / f"{os.getpid()}-prune-{secrets.token_hex(4)}"
    t.mkdir(parents=True)
    return t


def _remove(path: Path, trash: Path) -> None:
    try:
        dest = trash / f"{secrets.token_hex(6)}"
        os.rename(path, dest)
    except FileNotFoundError:
        return
    except OSError:
        dest = path
    if dest.is_dir() and not dest.is_symlink():
        if not mounts_under(dest):
            remove_tree(dest)
    else:
        dest.unlink(missing_ok=True)


class _Selection:
    """Records chosen for removal, least recently used first, with the bytes each frees (a snapshot is
    freed with the last record using it)."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.remaining = {s: len(keys) for s, keys in usage.refs.items()}
        self.total = sum(r.size for r in usage.records)
        self.chosen: list[tuple[Record, int]] = []

    def take(self, candidates: list[Record], keep: int | None = None) -> None:
        """Choose among `candidates`, oldest use first, while the records total more than `keep` bytes."""
        taken = {id(r) for r, _ in self.chosen}
        for rec in sorted(candidates, key=lambda r: (r.last_used, r.created)):
            if keep is not None and self.total <= keep:
                break
            if id(rec) in taken:
                continue
            n = rec.size if rec.path is not None else 0
            for s in dict.fromkeys(rec.snapshots):
                self.remaining[s] -= 1
                if self.remaining[s] == 0:
                    n += self.usage.unit_size.get(s, 0)
            self.chosen.append((rec, n))
            self.total -= n


def _delete(root: Path, store: CacheStore, usage: Usage, chosen: list[tuple[Record, int]]) -> PruneResult:
    """Remove the `chosen` records and all orphans: records first (one transaction), then their files."""
    doomed = [r for r, _ in chosen]
    keys = {r.key for r in doomed if r.key}
    still = {s for s, who in usage.refs.items() if who - keys}
    gone = sorted((set(usage.refs) - still) | set(usage.orphans.snapshots))
    store.forget(sorted(keys) + usage.orphans.records, gone + usage.stale_rows)
    if usage.index is not None and store.identity != usage.index:
        # the index was found corrupt and replaced while forgetting: nothing it referred to is referenced now,
        # so what to remove is decided again on the new index (every old snapshot is an orphan there)
        return _delete(root, store, scan(root, store, exclusive=True), [])

    result = PruneResult(orphans=usage.orphans.count, orphan_bytes=usage.orphans.size)
    for r, n in chosen:
        r.size = n
        result.records.append(r)
    result.freed = sum(n for _, n in chosen) + usage.orphans.size
    trash = _trash(root)
    try:
        for m in usage.orphans.mounts:
            try:
                unmount(m)
            except OSError:
                pass
        for p in usage.orphans.scratch:
            if p.is_dir() and p.parent.name == "tmp":
                remove_scratch(p)
            else:
                _remove(p, trash)
        for s in gone:
            _remove(root / "snapshots" / s, trash)
        for r in doomed:
            if r.path is not None:
                _remove(r.path, trash)
        kept_blobs = {d for d, s in usage.blob_owner.items() if s in still} | referenced_blobs(root)
        blobs = blob_dir(root)
        for name in os.listdir(blobs) if blobs.is_dir() else []:
            if "sha256:" + name not in kept_blobs:
                (blobs / name).unlink(missing_ok=True)
    finally:
        remove_scratch(trash)  # empty unless something in it was mounted: then it stays, never deleted through
    return result


def _everything_else(root: Path, usage: Usage, doomed: list[Record]) -> None:
    """After `prune --all` removed every record: the sources' bookkeeping (URL metadata, lock files) too."""
    if len(doomed) != len(usage.records):
        return
    for sub in ("http", "git", "cachemounts"):
        d = root / sub
        if d.is_dir() and not mounts_under(d):
            remove_tree(d)


def prune(root: Path, all: bool = False, keep_storage: int | None = None,
          until: float | None = None) -> PruneResult:
    """Remove unused cache records of `root` (waits for running builds) and all orphans.

    Without `all`, pulled base-image layers are kept (as buildx keeps internal records); `until` (seconds)
    keeps records used more recently; `keep_storage` (bytes) removes least recently used records only until
    the cache fits.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root, wait=True):
        store = CacheStore(root / "cache.db")
        try:
            usage = scan(root, store, exclusive=True)
            now = time.time()
            candidates = [r for r in usage.records
                          if (all or not r.internal) and (until is None or r.last_used < now - until)]
            sel = _Selection(usage)
            sel.take(candidates, keep_storage)
            result = _delete(root, store, usage, sel.chosen)
            if all and until is None and keep_storage is None:
                _everything_else(root, usage, result.records)
            return result
        finally:
            store.close()


def default_cap(root: Path) -> int:
    """`WORKBENCH_GC_CAP`, else BuildKit's default keepBytes: 10% of ROOT's filesystem, rounded up to GB."""
    env = os.environ.get("WORKBENCH_GC_CAP", "").strip()
    if env:
        return parse_size(env)
    try:
        st = os.statvfs(root if Path(root).exists() else Path(root).parent)
    except OSError:
        return DEFAULT_CAP_FALLBACK
    tenth = st.f_frsize * st.f_blocks // 10
    return (tenth // (1 << 30) + 1) * 1_000_000_000


def maybe_gc(root: Path, cap_bytes: int | None = None) -> PruneResult:
    """After a build: if `root`'s cache is over `cap_bytes` (default `default_cap`), remove least recently
    used records until it fits -- results, cache mounts and sources first, base-image layers last.
    Skips (result.skipped) when other builds are running. Orphans are removed either way, but while the cache
    with them fits the cap, a build's copies of stored results made in the last ORPHAN_GRACE seconds are left
    for a later GC."""
    root = Path(root)
    if not (root / "cache.db").exists():
        return PruneResult()
    cap = default_cap(root) if cap_bytes is None else cap_bytes
    with exclusive_lock(root, wait=False) as got:
        if not got:
            return PruneResult(skipped=True)
        store = CacheStore(root / "cache.db")
        try:
            usage = scan(root, store, exclusive=True)
            sel = _Selection(usage)
            sel.take([r for r in usage.records if not r.internal], cap)
            sel.take([r for r in usage.records if r.internal], cap)
            if sel.total + usage.orphans.size <= cap:
                _spare_young_orphans(root, usage, time.time() - ORPHAN_GRACE)
            return _delete(root, store, usage, sel.chosen)
        finally:
            store.close()


ORPHAN_GRACE = 300.0
"""Seconds a build's copy of a stored result waits for the automatic GC while the cache is under its cap
(`prune` takes it at once). A `--no-cache` rebuild whose result is already stored leaves its copy orphaned;
deleting it at the end of every build put thousands of deletions in the build's time and, on ext4 without a
journal (which skips inodes freed in the last minute), made the next build's file creation 2-5x slower."""


def _spare_young_orphans(root: Path, usage: Usage, cutoff: float) -> None:
    """Leave out of `usage.orphans` the snapshots a build marked as its copies of stored results
    (`SnapshotManager.mark_duplicates`) after `cutoff`; other orphans (a lost index's, a dead build's) go."""
    from workbench.snapshot.manager import DUPLICATE_MARK

    o = usage.orphans
    for s in list(o.snapshots):
        try:
            young = (root / "snapshots" / s / DUPLICATE_MARK).stat().st_mtime > cutoff
        except OSError:
            continue
        if young:
            o.snapshots.remove(s)
            o.size -= o.snapshot_sizes.pop(s, 0)


def remove_orphans(root: Path) -> PruneResult:
    """Remove only the orphans of `root` (what `prune` always removes: snapshot dirs without a record, stale
    temp dirs with their mounts and containers, unreferenced blobs, records with missing snapshots), keeping
    every record; skipped (result.skipped) while builds run."""
    root = Path(root)
    if not (root / "cache.db").exists():
        return PruneResult()
    with exclusive_lock(root, wait=False) as got:
        if not got:
            return PruneResult(skipped=True)
        store = CacheStore(root / "cache.db")
        try:
            return _delete(root, store, scan(root, store, exclusive=True), [])
        finally:
            store.close()
