"""Disk management of a build root: `du`, `prune`, automatic GC under a size cap, and the build lock.

What is cache under ROOT: result records (cache key → snapshot chain), pulled base-image layers
(`layer:<chainid>` records), the content blobs those snapshots were exported or pulled as (and the image
manifests/configs that point at them), `RUN --mount=type=cache` dirs (`cachemounts/`) and downloaded
sources (`http/`, `git/`). Everything else is an orphan: snapshot dirs no record references, temp dirs and
ingest files of dead processes (with their mounts and runc containers), content blobs nothing needs, and
records whose snapshots are missing. `prune` always removes orphans.

Locking: a build holds ROOT/lock shared (flock, so the kernel drops it when a build is killed) for its
whole duration -- `SnapshotManager` takes it, `build_lock` is the same for callers; prune takes it
exclusively (waiting for running builds); `maybe_gc` tries it without waiting and skips when builds run.
Deletion removes records first (one transaction) and files after, so a crash mid-prune leaves orphans
and never a record pointing at nothing.

Prune semantics (as `docker buildx prune`): without `all`, every unused record is removed except the
"internal" ones -- for workbench the pulled base-image layers, the analogue of the image layers BuildKit
shares with the image store and of its internal/frontend records, which plain prune keeps; `all`
removes those too. `until` keeps records used within that duration; `keep_storage` removes least
recently used records only until the cache fits in that many bytes.

Automatic GC (BuildKit's default policy, simplified): after a build, when the store is over its cap,
remove least recently used records until it fits -- build results, cache mounts and sources first,
base-image layers only if that was not enough. The cap is `WORKBENCH_GC_CAP` (e.g. `50MB`, `2GB`) or,
as BuildKit's default keepBytes, 10% of the size of the filesystem holding ROOT (rounded up to whole GB),
2GB when that cannot be found.

Sizes are disk usage (allocated blocks, hard links once, mount points not crossed). Size strings parse
as docker's (`50MB` = 50 MiB, case-insensitive) and print as docker's (decimal, 4 significant digits).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.cache.store import CacheStore
from workbench.snapshot.manager import _remove_tree, mounts_under, remove_scratch, stale_entry
from workbench.snapshot.overlay import unmount
from workbench.state_root import write_private

DEFAULT_CAP_FALLBACK = 2_000_000_000
_MAX_METADATA = 4 << 20  # manifests, indexes and configs are small JSON blobs
_LEASES = "leases"

# -- the build lock ----------------------------------------------------------------------------------------


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
        lease = root / _LEASES / f"{os.getpid()}-{secrets.token_hex(4)}"
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


def _running_since(root: Path) -> float | None:
    """When the oldest running build on `root` started, None if none runs."""
    starts: list[float] = []
    leases = root / _LEASES
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


# -- sizes and durations ----------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str) -> int:
    """Bytes in `text` as docker reads sizes (units.RAMInBytes): `100`, `512k`, `50MB`, `2GiB` (binary units)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"invalid size {text!r} (e.g. 512MB, 2GB)")
    power = "kmgtp".find(m[2].lower()) + 1 if m[2] else 0
    return int(float(m[1]) * (1024**power))


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string: `24h`, `10m`, `1h30m`, `90s`, `1.5h`."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m[1]) * _DURATION_UNITS[m[2]]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"invalid duration {text!r} (e.g. 24h, 10m, 1h30m)")
    return sign * total


def human_size(n: float) -> str:
    """Docker's units.HumanSize: decimal units, 4 significant digits (`12.35MB`, `0B`)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return f"{n:.4g}{units[i]}"


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration (`Less than a second`, `5 minutes`, `About an hour`, `3 days`)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def disk_usage(path: Path) -> int:
    """Allocated bytes of `path` and everything under it (as `du -sB1 -x`): hard links once, no mounts crossed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    dev = st.st_dev
    seen: set[int] = set()
    total = st.st_blocks * 512
    if not stat.S_ISDIR(st.st_mode):
        return total
    stack = [os.fspath(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    est = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if est.st_dev != dev:
                    continue
                if est.st_nlink > 1 and not stat.S_ISDIR(est.st_mode):
                    if est.st_ino in seen:
                        continue
                    seen.add(est.st_ino)
                total += est.st_blocks * 512
                if stat.S_ISDIR(est.st_mode):
                    stack.append(e.path)
    return total


# -- what is in the store ---------------------------------------------------------------------------------


@dataclass
class Record:
    """One cache record as `du` shows it."""

    id: str
    kind: str  # "regular" (a step's result), "layer" (pulled base layer), "cachemount", "http", "git"
    description: str
    size: int
    last_used: float
    created: float = 0.0
    shared: bool = False
    in_use: bool = False
    key: str = ""  # the result key, for "regular" and "layer"
    snapshots: list[str] = field(default_factory=list)  # the chain, for "regular" and "layer"
    path: Path | None = None  # the dir or file, for the others

    @property
    def internal(self) -> bool:
        """Kept by a plain prune (pulled base-image layers)."""
        return self.kind == "layer"

    @property
    def reclaimable(self) -> bool:
        return not self.in_use


@dataclass
class Orphans:
    """What no record accounts for; prune removes all of it."""

    snapshots: list[str] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # temp dirs/files of dead processes
    blobs: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # keys whose snapshots are missing
    mounts: list[Path] = field(default_factory=list)  # mounts under ROOT no running build owns
    size: int = 0

    @property
    def count(self) -> int:
        return len(self.snapshots) + len(self.scratch) + len(self.blobs) + len(self.records) + len(self.mounts)


@dataclass
class Usage:
    """`du` of a build root."""

    records: list[Record]
    orphans: Orphans
    running: bool  # builds were running when this was taken
    # internals, for prune: snapshot id → size (with its blobs), → keys referring to it; blob → snapshots.
    unit_size: dict[str, int] = field(default_factory=dict)
    refs: dict[str, set[str]] = field(default_factory=dict)
    blob_owner: dict[str, str] = field(default_factory=dict)
    stale_rows: list[str] = field(default_factory=list)  # layer_blobs/size rows of snapshots not on disk

    @property
    def shared(self) -> int:
        return sum(r.size for r in self.records if r.shared)

    @property
    def private(self) -> int:
        return sum(r.size for r in self.records if not r.shared)

    @property
    def reclaimable(self) -> int:
        return sum(r.size for r in self.records if r.reclaimable) + self.orphans.size

    @property
    def total(self) -> int:
        """Everything du accounts for: records (each snapshot once) and orphans."""
        return sum(r.size for r in self.records) + self.orphans.size


def _blob_dir(root: Path) -> Path:
    return root / "content" / "blobs" / "sha256"


def _short(text: str) -> str:
    return text.rsplit(":", 1)[-1][:25]


def _read_metadata(path: Path) -> dict[str, object] | None:
    """A blob's JSON document if it is a small JSON object (a manifest, index or config)."""
    try:
        if path.stat().st_size > _MAX_METADATA:
            return None
        with open(path, "rb") as f:
            if f.read(1) != b"{":
                return None
            doc = json.loads(b"{" + f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _digests(descs: object) -> list[str]:
    if not isinstance(descs, list):
        return []
    return [str(d.get("digest", "")) for d in descs if isinstance(d, dict)]


def _attach_metadata(blob_dir: Path, names: list[str], owner: dict[str, str]) -> dict[str, str]:
    """Manifests (and their configs) and indexes among `names` that point at kept layer blobs, attached to
    the snapshot of their topmost kept layer: {blob digest: snapshot}."""
    manifests: dict[str, dict[str, object]] = {}
    indexes: dict[str, dict[str, object]] = {}
    for name in names:
        digest = "sha256:" + name
        if digest in owner:
            continue
        doc = _read_metadata(blob_dir / name)
        if doc is None:
            continue
        if isinstance(doc.get("manifests"), list):
            indexes[digest] = doc
        elif isinstance(doc.get("layers"), list) and isinstance(doc.get("config"), dict):
            manifests[digest] = doc
    attached: dict[str, str] = {}
    for digest, doc in manifests.items():
        kept = [owner[d] for d in _digests(doc["layers"]) if d in owner]
        if kept:
            attached[digest] = kept[-1]
            for config in _digests([doc["config"]]):
                if config not in owner:
                    attached.setdefault(config, kept[-1])
    for digest, doc in indexes.items():
        kept = [attached[d] for d in _digests(doc["manifests"]) if d in attached]
        if kept:
            attached[digest] = kept[0]
    return attached


def _dir_records(root: Path) -> list[Record]:
    """Cache mounts, downloaded files and git repos, one record each."""
    out: list[Record] = []
    mounts = root / "cachemounts"
    if mounts.is_dir():
        for d in sorted(mounts.iterdir()):
            if not d.is_dir():
                continue
            try:
                cache_id = (d / "id").read_text().strip()
                used = (d / "id").stat().st_mtime
            except OSError:
                cache_id, used = d.name, d.stat().st_mtime
            out.append(Record(_short(d.name), "cachemount", f"cache mount {cache_id}", disk_usage(d), used,
                              path=d))
    http = root / "http" / "sha256"
    if http.is_dir():
        urls = _http_urls(root / "http" / "urls")
        for f in sorted(http.iterdir()):
            if f.name.startswith(".") or not f.is_file():
                continue
            url = urls.get("sha256:" + f.name, "")
            desc = f"http {url}" if url else f"http download sha256:{f.name[:12]}"
            st = f.stat()
            out.append(Record(_short(f.name), "http", desc, st.st_blocks * 512, st.st_mtime, path=f))
    git = root / "git"
    if git.is_dir():
        for d in sorted(git.iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            used = max((p.stat().st_mtime for p in (d, d / "FETCH_HEAD", d / "HEAD") if p.exists()),
                       default=0.0)
            out.append(Record(_short(d.name), "git", f"git repo {_git_url(d)}".rstrip(), disk_usage(d), used,
                              path=d))
    return out


def _http_urls(urls: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    if not urls.is_dir():
        return found
    for f in urls.glob("*.json"):
        try:
            data = json.loads(f.read_text())
            for e in data.get("entries", []):
                found.setdefault(str(e.get("digest", "")), str(data.get("url", "")))
        except (OSError, ValueError, AttributeError):
            continue
    return found


def _git_url(repo: Path) -> str:
    for config in (repo / "config", repo / ".git" / "config"):
        try:
            m = re.search(r"^\s*url\s*=\s*(.+)$", config.read_text(), re.MULTILINE)
        except OSError:
            continue
        if m:
            return m[1].strip()
    return ""


def _scratch(root: Path, exclusive: bool) -> list[Path]:
    """Temp dirs and files of dead processes (of any process but ours, when no build can be running)."""
    found: list[Path] = []
    me = f"{os.getpid()}-"
    for sub in ("tmp", _LEASES):
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


def _scan(root: Path, store: CacheStore, exclusive: bool, remember: bool = True) -> Usage:
    """Everything `du` reports; `exclusive`: no build can be running (we hold the lock); `remember`: store the
    sizes of newly measured snapshots (off when the disk is full: then nothing may be written)."""
    since = None if exclusive else _running_since(root)
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
    blob_dir = _blob_dir(root)
    names = sorted(os.listdir(blob_dir)) if blob_dir.is_dir() else []
    blob_owner: dict[str, str] = {}
    layer_blobs = store.layer_blobs()
    stale_rows = sorted((set(layer_blobs) | set(known)) - on_disk)
    for snap, blob in sorted(layer_blobs.items()):
        if snap in refs:
            blob_owner.setdefault(blob.digest, snap)
    blob_owner.update(_attach_metadata(blob_dir, names, blob_owner))
    unit = {s: sizes.get(s, 0) for s in refs}
    from workbench.image.store import referenced_blobs

    named = referenced_blobs(root)  # blobs of images in the local image store are never garbage
    for name in names:
        digest = "sha256:" + name
        try:
            n = os.lstat(blob_dir / name).st_blocks * 512
        except OSError:
            continue
        if digest in named and digest not in blob_owner:
            continue
        if digest in blob_owner:
            unit[blob_owner[digest]] += n
        elif since is None or _mtime(blob_dir / name) < since - 1:  # else a running build may be about to use it
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
            _short(r.key), "layer" if r.key.startswith("layer:") else "regular", r.description,
            sum(unit[s] for s in mine), r.last_used, r.created, any(len(refs[s]) > 1 for s in mine),
            key=r.key, snapshots=list(r.chain),
        ))
    records += _dir_records(root)
    for rec in records:
        rec.in_use = since is not None and rec.last_used >= since - 1

    for s in sorted(on_disk - set(refs)):
        try:
            young = since is not None and (snapdir / s).stat().st_mtime >= since - 1
        except OSError:
            continue
        if not young:  # a running build may be about to record a snapshot it just committed
            orphans.snapshots.append(s)
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
        return _scan(root, store, exclusive=False)
    finally:
        store.close()


def prunable(root: Path) -> int:
    """Bytes a plain `workbench prune` would free now (unused records but base-image layers, and orphans);
    writes nothing, so it can be asked on a full disk."""
    root = Path(root)
    if not (root / "cache.db").exists():
        return 0
    import sqlite3

    try:
        store = CacheStore(root / "cache.db")
    except sqlite3.OperationalError:  # a full disk leaves no room for the -wal/-shm of a new connection
        store = CacheStore(root / "cache.db", snapshot_read=True)
    try:
        usage = _scan(root, store, exclusive=False, remember=False)
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # an index never written to (a new root on a full disk): nothing cached
            return 0
        raise
    finally:
        store.close()
    return sum(r.size for r in usage.records if r.reclaimable and not r.internal) + usage.orphans.size


# -- removal ----------------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """What a prune or GC removed."""

    records: list[Record] = field(default_factory=list)
    orphans: int = 0
    orphan_bytes: int = 0
    freed: int = 0  # bytes, records and orphans
    skipped: bool = False  # GC only: builds were running


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
            _remove_tree(dest)
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
        from workbench.image.store import referenced_blobs

        kept_blobs = {d for d, s in usage.blob_owner.items() if s in still} | referenced_blobs(root)
        blob_dir = _blob_dir(root)
        for name in os.listdir(blob_dir) if blob_dir.is_dir() else []:
            if "sha256:" + name not in kept_blobs:
                (blob_dir / name).unlink(missing_ok=True)
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
            _remove_tree(d)


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
            usage = _scan(root, store, exclusive=True)
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
    Skips (result.skipped) when other builds are running. Orphans are removed either way."""
    root = Path(root)
    if not (root / "cache.db").exists():
        return PruneResult()
    cap = default_cap(root) if cap_bytes is None else cap_bytes
    with exclusive_lock(root, wait=False) as got:
        if not got:
            return PruneResult(skipped=True)
        store = CacheStore(root / "cache.db")
        try:
            usage = _scan(root, store, exclusive=True)
            sel = _Selection(usage)
            sel.take([r for r in usage.records if not r.internal], cap)
            sel.take([r for r in usage.records if r.internal], cap)
            return _delete(root, store, usage, sel.chosen)
        finally:
            store.close()


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
            return _delete(root, store, _scan(root, store, exclusive=True), [])
        finally:
            store.close()


# -- text, as buildx prints it ----------------------------------------------------------------------------


def _table(rows: list[Record], now: float) -> list[str]:
    lines = [f"{'ID':<48}{'RECLAIMABLE':<16}{'SIZE':<16}LAST ACCESSED"]
    for r in rows:
        ident = r.id + ("*" if r.shared else "")
        ago = human_duration(now - r.last_used) + " ago" if r.last_used else ""
        lines.append(f"{ident:<48}{str(r.reclaimable).lower():<16}{human_size(r.size):<16}{ago}")
    return lines


def _verbose(rows: list[Record], now: float) -> list[str]:
    lines: list[str] = []
    for r in rows:
        lines.append(f"ID:\t\t{r.id}")
        if r.created:
            lines.append(f"Created at:\t{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.created))}")
        lines += [
            "Mutable:\t" + str(r.kind in ("cachemount", "git")).lower(),
            f"Reclaimable:\t{str(r.reclaimable).lower()}",
            f"Shared:\t\t{str(r.shared).lower()}",
            f"Size:\t\t{human_size(r.size)}",
            f"Description:\t{r.description}",
            f"Last used:\t{human_duration(now - r.last_used)} ago",
            f"Type:\t\t{r.kind}",
            "",
        ]
    return lines


def format_du(usage: Usage, verbose: bool = False) -> str:
    """`docker buildx du` text: one row per record (least recently used first), then the summary."""
    now = time.time()
    rows = sorted(usage.records, key=lambda r: (r.last_used, r.created, r.id))
    lines = _verbose(rows, now) if verbose else (_table(rows, now) if rows else [])
    summary: list[tuple[str, int]] = []
    if usage.shared > 0:
        summary += [("Shared:", usage.shared), ("Private:", usage.private)]
    o = usage.orphans
    if o.count:
        summary.append(("Orphans:", o.size))
    summary += [("Reclaimable:", usage.reclaimable), ("Total:", usage.total)]
    lines += [f"{label:<16}{human_size(n)}" for label, n in summary]
    if o.count:
        parts = [(len(o.snapshots), "snapshot dirs without a record"), (len(o.scratch), "stale temp files"),
                 (len(o.blobs), "unreferenced blobs"), (len(o.records), "records with missing snapshots"),
                 (len(o.mounts), "leftover mounts")]
        lines.append("Orphans: " + ", ".join(f"{n} {what}" for n, what in parts if n) + " (workbench prune)")
    if usage.running:
        lines.append("Builds are running: records they may use are not reclaimable.")
    return "\n".join(lines) + "\n"


def format_prune(result: PruneResult, verbose: bool = False) -> str:
    """`docker buildx prune` text: the removed records, then `Total:`."""
    if result.skipped:
        return "Skipped: other builds are running.\n"
    now = time.time()
    lines = (_verbose(result.records, now) if verbose else _table(result.records, now)) if result.records else []
    if result.orphans:
        lines.append(f"{'Orphans:':<16}{human_size(result.orphan_bytes)} ({result.orphans} removed)")
    lines.append(f"{'Total:':<16}{human_size(result.freed)}")
    return "\n".join(lines) + "\n"


def main_du(root: Path, verbose: bool = False) -> str:
    """What `workbench du [--verbose]` prints."""
    return format_du(du(root), verbose)


def main_prune(root: Path, all: bool = False, keep_storage: str | int | None = None,
               until: str | float | None = None, verbose: bool = False) -> str:
    """What `workbench prune [--all] [--keep-storage SIZE] [--filter until=DURATION]` prints; sizes and
    durations may be given as text (`2GB`, `24h`). ValueError for a malformed one."""
    keep = parse_size(keep_storage) if isinstance(keep_storage, str) else keep_storage
    secs = parse_duration(until) if isinstance(until, str) else until
    return format_prune(prune(root, all=all, keep_storage=keep, until=secs), verbose)

