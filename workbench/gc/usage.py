"""What is in a build root's cache (`du`): records with their sizes, orphans, and what prune would free.

What is cache under ROOT: result records (cache key → snapshot chain), pulled base-image layers
(`layer:<chainid>` records), the content blobs those snapshots were exported or pulled as (and the image
manifests/configs that point at them), `RUN --mount=type=cache` dirs (`cachemounts/`) and downloaded
sources (`http/`, `git/`). Everything else is an orphan: snapshot dirs no record references, temp dirs and
ingest files of dead processes (with their mounts and runc containers), content blobs nothing needs, and
records whose snapshots are missing.

While builds run (their leases in `workbench.snapshot.lease`), what they may use is not reclaimable: records
used and files written since the oldest of them started.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from workbench.cache.store import CacheStore
from workbench.gc.content import attach_metadata, blob_dir
from workbench.gc.model import Orphans, Record, Usage
from workbench.gc.sources import dir_records, short_id
from workbench.gc.units import disk_usage
from workbench.image.store import referenced_blobs
from workbench.snapshot.lease import LEASES, running_since
from workbench.snapshot.scratch import mounts_under, stale_entry


def _scratch(root: Path, exclusive: bool) -> list[Path]:
    """Temp dirs and files of dead processes (of any process but ours, when no build can be running)."""
    found: list[Path] = []
    me = f"{os.getpid()}-"
    for sub in ("tmp", LEASES):
        d = root / sub
        if d.is_dir():
            found += [p for p in d.iterdir() if stale_entry(p) or (exclusive and not p.name.startswith(me))]
    ingest = root / "content" / "ingest"
    if ingest.is_dir():
        found += [p for p in ingest.iterdir() if stale_entry(p) or (exclusive and time.time() - _mtime(p) > 3600)]
    if exclusive:  # half-done downloads and cache mount dirs: only a running build could be writing them
        found += list((root / "http" / "sha256").glob(".download-*"))
        found += list((root / "http" / "urls").glob(".*.tmp"))
        found += list((root / "cachemounts").glob("*/*.new"))
    return found


def _mtime(p: Path) -> float:
    try:
        return p.lstat().st_mtime
    except OSError:
        return time.time()


def scan(root: Path, store: CacheStore, exclusive: bool, remember: bool = True) -> Usage:
    """Everything `du` reports; `exclusive`: no build can be running (we hold the lock); `remember`: store the
    sizes of newly measured snapshots (off when the disk is full: then nothing may be written).

    `index` is the cache index as the scan began: if it was found corrupt and replaced since (midway, or
    while a prune forgot records), a prune decides again on the new one."""
    identity = store.identity
    usage = _scan(root, store, exclusive, remember)
    usage.index = identity
    return usage


def _scan(root: Path, store: CacheStore, exclusive: bool, remember: bool) -> Usage:
    since = None if exclusive else running_since(root)
    snapdir = root / "snapshots"
    on_disk = {p.name for p in snapdir.iterdir() if p.name != "empty"} if snapdir.is_dir() else set()
    complete = {s for s in on_disk if (snapdir / s / "fs").is_dir()}
    results = store.results()
    valid = [r for r in results if all(s in complete for s in r.chain)]
    orphans = Orphans(records=[r.key for r in results if not all(s in complete for s in r.chain)])
    refs: dict[str, set[str]] = {}
    for r in valid:
        for s in r.chain:
            refs.setdefault(s, set()).add(r.key)

    known = store.snapshot_sizes()
    sizes = {s: known[s] for s in complete if s in known}
    new = {s: disk_usage(snapdir / s) for s in on_disk if s not in sizes}
    if remember and new:
        store.record_snapshot_sizes({s: n for s, n in new.items() if s in complete})
    sizes.update(new)

    # Content: layer blobs go with their snapshot, manifests/configs with their top layer's snapshot.
    blobs = blob_dir(root)
    names = sorted(os.listdir(blobs)) if blobs.is_dir() else []
    blob_owner: dict[str, str] = {}
    layer_blobs = store.layer_blobs()
    variants = sorted(store.layer_blob_variants(), key=lambda v: (v[0], v[1].media_type))
    stale_rows = sorted((set(layer_blobs) | set(known) | {snap for snap, _ in variants}) - on_disk)
    for snap, blob in [*sorted(layer_blobs.items()), *variants]:
        if snap in refs:
            blob_owner.setdefault(blob.digest, snap)
    blob_owner.update(attach_metadata(blobs, names, blob_owner))
    unit = {s: sizes.get(s, 0) for s in refs}
    named = referenced_blobs(root)  # blobs of images in the local image store are never garbage
    for name in names:
        digest = "sha256:" + name
        try:
            n = os.lstat(blobs / name).st_blocks * 512
        except OSError:
            continue
        if digest in named and digest not in blob_owner:
            continue
        if digest in blob_owner:
            unit[blob_owner[digest]] += n
        elif since is None or _mtime(blobs / name) < since - 1:  # else a running build may be about to use it
            orphans.blobs.append(digest)
            orphans.size += n

    # Each snapshot is counted once: for the oldest record whose result it is (or, failing that, that uses it).
    by_age = sorted(valid, key=lambda r: (r.created, r.key))
    owner: dict[str, str] = {}
    for r in by_age:
        if r.chain:
            owner.setdefault(r.chain[-1], r.key)
    for r in by_age:
        for s in r.chain:
            owner.setdefault(s, r.key)
    records: list[Record] = []
    for r in valid:
        mine = [s for s in dict.fromkeys(r.chain) if owner.get(s) == r.key]
        records.append(Record(
            short_id(r.key), "layer" if r.key.startswith("layer:") else "regular", r.description,
            sum(unit[s] for s in mine), r.last_used, r.created, any(len(refs[s]) > 1 for s in mine),
            key=r.key, snapshots=list(r.chain),
        ))
    records += dir_records(root)
    for rec in records:
        rec.in_use = since is not None and rec.last_used >= since - 1

    for s in sorted(on_disk - set(refs)):
        try:
            young = since is not None and (snapdir / s).stat().st_mtime >= since - 1
        except OSError:
            continue
        if not young:  # a running build may be about to record a snapshot it just committed
            orphans.snapshots.append(s)
            orphans.snapshot_sizes[s] = sizes.get(s, 0)
            orphans.size += sizes.get(s, 0)
    orphans.scratch = _scratch(root, exclusive)
    orphans.size += sum(disk_usage(p) for p in orphans.scratch)
    orphans.mounts = stale_mounts(root, exclusive)
    return Usage(records, orphans, since is not None, unit, refs, blob_owner, stale_rows)


def stale_mounts(root: Path, exclusive: bool = False) -> list[Path]:
    """Mounts builds left below ROOT/tmp (where every mount of a build is made) that no running build owns,
    deepest first (`exclusive`: no build runs). Never ROOT or ROOT/tmp themselves, nor anything outside
    ROOT/tmp: a filesystem the user mounted there (a bigger disk for snapshots, a tmpfs root) is not ours."""
    tmp = Path(os.path.realpath(root / "tmp"))
    live = [] if exclusive else [tmp / p.name for p in tmp.glob("*") if not stale_entry(p)]
    return [m for m in mounts_under(tmp) if m != tmp and not any(m == p or p in m.parents for p in live)]


def du(root: Path) -> Usage:
    """Disk usage of `root`'s cache; removes nothing and takes no lock (builds may run meanwhile)."""
    root = Path(root)
    if not (root / "cache.db").exists():
        return Usage([], Orphans(), False)
    store = CacheStore(root / "cache.db")
    try:
        return scan(root, store, exclusive=False)
    finally:
        store.close()


def prunable(root: Path) -> int:
    """Bytes a plain `workbench prune` would free now (unused records but base-image layers, and orphans);
    writes nothing, so it can be asked on a full disk."""
    root = Path(root)
    if not (root / "cache.db").exists():
        return 0
    try:
        store = CacheStore(root / "cache.db")
    except sqlite3.OperationalError:  # a full disk leaves no room for the -wal/-shm of a new connection
        store = CacheStore(root / "cache.db", snapshot_read=True)
    try:
        usage = scan(root, store, exclusive=False, remember=False)
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # an index never written to (a new root on a full disk): nothing cached
            return 0
        raise
    finally:
        store.close()
    return sum(r.size for r in usage.records if r.reclaimable and not r.internal) + usage.orphans.size
