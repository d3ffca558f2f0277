"""Disk management of the cache store with real builds: du, prune (all, until, keep-storage), the build lock, GC."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, cached_count, wb
from workbench import gc
from workbench.cache.store import CacheStore
from workbench.snapshot import lease

MB = 1_000_000



def _reran(stderr: str) -> bool:
    return cached_count(stderr) == 0


def _project(tmp_path: Path, name: str, dockerfile: str) -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f.txt").write_text(name + "\n")
    return ctx


def _du_b(*paths: Path) -> int:
    existing = [str(p) for p in paths if p.exists()]
    out = subprocess.run(["du", "-sxB1", "-c", *existing], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def _age(root: Path, seconds: float, where: str = "1") -> None:
    """Make records look unused for `seconds`."""
    db = sqlite3.connect(root / "cache.db")
    db.execute(f"UPDATE results SET last_used = last_used - ? WHERE {where}", (seconds,))
    db.commit()
    db.close()


def test_parsing_and_formatting() -> None:
    assert gc.parse_size("50MB") == 50 << 20
    assert gc.parse_size("2gb") == 2 << 30
    assert gc.parse_size("512k") == 512 << 10
    assert gc.parse_size("100") == 100
    assert gc.parse_size("1.5GiB") == 3 << 29
    with pytest.raises(ValueError):
        gc.parse_size("lots")
    assert gc.parse_duration("24h") == 86400
    assert gc.parse_duration("1h30m10s") == 5410
    assert gc.parse_duration("10m") == 600
    assert gc.parse_duration("1.5h") == 5400
    assert gc.parse_duration("250ms") == 0.25
    for bad in ("", "10", "h", "10x", "1h 2m"):
        with pytest.raises(ValueError):
            gc.parse_duration(bad)
    assert gc.human_size(0) == "0B"
    assert gc.human_size(12_345_678) == "12.35MB"
    assert gc.human_size(1024) == "1.024kB"
    assert gc.human_duration(0.2) == "Less than a second"
    assert gc.human_duration(90) == "About a minute"
    assert gc.human_duration(3 * 86400) == "3 days"


def test_record_with_missing_snapshots_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "snapshots" / "good" / "fs").mkdir(parents=True)
    s = CacheStore(tmp_path / "cache.db")
    assert s.record("k", ["gone"]) == ["gone"]
    assert s.record("k", ["good"]) == ["good"]  # the dangling record does not win
    assert s.record("k", ["other"]) == ["good"]  # a complete one does
    s.close()


def test_lock_is_shared_by_builds_and_exclusive_for_prune(tmp_path: Path) -> None:
    code = ("import sys,time; from pathlib import Path; from workbench.snapshot.lease import build_lock;\n"
            f"with build_lock(Path({str(tmp_path)!r})):\n print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with lease.build_lock(tmp_path):  # shared: a second build runs alongside
            pass
        with lease.exclusive_lock(tmp_path, wait=False) as got:
            assert not got
        assert lease.running_since(tmp_path) is not None
        holder.kill()  # the kernel drops a killed process's lock
        holder.wait()
        with lease.exclusive_lock(tmp_path, wait=False) as got:
            assert got
        assert lease.running_since(tmp_path) is None  # its lease is stale now
        with lease.build_lock(tmp_path), lease.exclusive_lock(tmp_path, wait=False) as got:
            assert got  # our own single hold converts (maybe_gc at the end of a build)
    finally:
        holder.kill()
        holder.wait()


def test_du_matches_the_disk_and_counts_shared_snapshots_once(registry: str, tmp_path: Path, root: Path) -> None:
    base = "FROM localhost:5055/busybox\nRUN head -c 5000000 /dev/urandom > /shared\n"
    a = _project(tmp_path, "a", base + "RUN head -c 2000000 /dev/urandom > /a\n")
    b = _project(tmp_path, "b", base + "COPY f.txt /f\nRUN head -c 3000000 /dev/urandom > /b\n")
    wb(str(a), "-o", f"type=oci,dest={tmp_path / 'a.tar'}", root=root)
    wb(str(b), root=root)
    usage = gc.du(root)
    assert usage.orphans.count == 0, usage.orphans
    disk = _du_b(root / "snapshots", root / "content" / "blobs")
    assert abs(usage.total - disk) < 64 * 1024, (usage.total, disk)
    assert sum(r.size for r in usage.records) == usage.total
    shared = [r for r in usage.records if "/shared" in r.description]
    # Random bytes do not compress: a snapshot exported to the OCI tar also takes its size again as a blob.
    assert len(shared) == 1 and shared[0].shared and 10 * MB <= shared[0].size < 10.4 * MB
    a_rec = next(r for r in usage.records if "> /a" in r.description)
    assert not a_rec.shared and 4 * MB <= a_rec.size < 4.4 * MB
    b_rec = next(r for r in usage.records if "> /b" in r.description)
    assert not b_rec.shared and 3 * MB <= b_rec.size < 3.2 * MB  # built, never exported: no blob
    assert 17 * MB < usage.total < 21 * MB  # the 10 MB parent once, not twice
    assert all(r.reclaimable for r in usage.records) and not usage.running
    text = gc.main_du(root)
    assert text.splitlines()[0].split() == ["ID", "RECLAIMABLE", "SIZE", "LAST", "ACCESSED"]
    assert "Shared:" in text and "Private:" in text and "Total:" in text
    assert "Type:\t\tlayer" in gc.main_du(root, verbose=True)


def test_prune_all_empties_the_store_and_a_rebuild_reruns(registry: str, tmp_path: Path, root: Path) -> None:
    ctx = _project(tmp_path, "p", "FROM localhost:5055/busybox\nCOPY f.txt /f\n"
                                  "RUN head -c 3000000 /dev/urandom > /blob && cd / && md5sum blob > blob.md5\n")
    wb(str(ctx), "-o", f"type=oci,dest={tmp_path / 'p.tar'}", root=root)
    before = gc.du(root).total
    plain = gc.prune(root)  # keeps the pulled base layers
    assert plain.freed > 3 * MB and all(not r.internal for r in plain.records)
    left = gc.du(root)
    assert left.records and all(r.kind == "layer" for r in left.records) and left.total < before
    text = gc.main_prune(root, all=True)
    assert text.strip().splitlines()[-1].startswith("Total:")
    usage = gc.du(root)
    assert usage.records == [] and usage.orphans.count == 0 and usage.total == 0
    assert sorted(os.listdir(root / "snapshots")) == ["empty"]
    assert os.listdir(root / "content" / "blobs" / "sha256") == []
    assert CacheStore(root / "cache.db").results() == []
    out = tmp_path / "out"
    proc = wb(str(ctx), "-o", f"type=local,dest={out}", root=root)
    assert _reran(proc.stderr) and "pruned" in proc.stderr  # the miss reason: lineage rows outlive records
    assert (out / "f").read_text() == "p\n" and (out / "blob").stat().st_size == 3000000
    check = subprocess.run(["md5sum", "-c", "blob.md5"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prune_waits_for_a_running_build(registry: str, tmp_path: Path, root: Path) -> None:
    wb(str(_project(tmp_path, "old", "FROM localhost:5055/busybox\nRUN head -c 2000000 /dev/urandom > /o\n")),
       root=root)
    ctx = _project(tmp_path, "slow", "FROM localhost:5055/busybox\nRUN head -c 2000000 /dev/urandom > /x\n"
                                     "RUN sleep 2 && echo done > /done\n")
    out = tmp_path / "out"
    build = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", "-o",
                                          f"type=local,dest={out}", str(ctx)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not list((root / "tmp").glob("*/bundle-*")):  # the sleep step's container is being set up
            assert build.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        running = gc.du(root)
        assert running.running and any(not r.reclaimable for r in running.records)
        assert gc.maybe_gc(root, 0).skipped  # automatic GC does not wait
        started = time.monotonic()
        pruned = gc.prune(root, all=True)
        assert time.monotonic() - started > 0.5 and (out / "done").is_file()  # prune waited for the build
        assert build.wait() == 0, build.stderr.read() if build.stderr else ""
    finally:
        build.kill()
        build.wait()
    assert (out / "done").read_text() == "done\n" and (out / "x").stat().st_size == 2000000
    assert pruned.freed > 4 * MB and gc.du(root).total == 0
    proc = wb(str(ctx), "-o", f"type=local,dest={tmp_path / 'again'}", root=root)
    assert _reran(proc.stderr) and (tmp_path / "again" / "done").read_text() == "done\n"


def test_until_and_keep_storage(registry: str, tmp_path: Path, root: Path) -> None:
    for n in range(3):
        wb(str(_project(tmp_path, f"k{n}", f"FROM localhost:5055/busybox\nRUN head -c {n + 2}000000 /dev/urandom"
                                          f" > /f{n}\n")), root=root)
        _age(root, 3600)  # each earlier build an hour further in the past
    fresh = _project(tmp_path, "fresh", "FROM localhost:5055/busybox\nRUN head -c 1000000 /dev/urandom > /new\n")
    wb(str(fresh), root=root)
    # until=90m: only k0 and k1 (last used 2 and 3 hours ago) go; k2 (1 hour) and fresh stay.
    res = gc.prune(root, until=gc.parse_duration("90m"))
    gone = {r.description for r in res.records}
    assert any("/f0" in d for d in gone) and any("/f1" in d for d in gone)
    left = {r.description for r in gc.du(root).records}
    assert any("/f2" in d for d in left) and any("/new" in d for d in left)
    assert not any("/f0" in d or "/f1" in d for d in left)
    # keep-storage 6MB: least recently used first, so k2's 4 MB step goes; the fresh build (its 1 MB step
    # and the 3 MB base layer it uses) stays.
    assert gc.du(root).total > 6 << 20
    res = gc.prune(root, all=True, keep_storage=gc.parse_size("6MB"))
    assert [r.description for r in res.records if r.size] == ["[2/2] RUN head -c 4000000 /dev/urandom > /f2"]
    assert gc.du(root).total <= 6 << 20
    left = {r.description for r in gc.du(root).records}
    assert any("/new" in d for d in left) and not any("/f2" in d for d in left)
    proc = wb(str(fresh), root=root)
    assert cached_count(proc.stderr) == 2  # the most recently used build is still fully cached


def test_gc_keeps_the_store_under_its_cap(registry: str, tmp_path: Path, root: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_GC_CAP", "50MB")
    cap = gc.default_cap(root)
    assert cap == 50 << 20
    dockerfile = ("FROM localhost:5055/busybox\nARG N\nRUN head -c 12000000 /dev/urandom > /a && echo $N > /n\n"
                  "RUN head -c 13000000 /dev/urandom > /b\n")
    ctx = _project(tmp_path, "gc", dockerfile)
    for n in range(8):  # 8 x 25 MB = 200 MB built in all
        wb(str(ctx), "--build-arg", f"N={n}", root=root)
        assert gc.du(root).total < cap + 30 * MB  # at most the cap plus the build that just finished
        result = gc.maybe_gc(root)
        assert not result.skipped
        usage = gc.du(root)
        assert usage.total <= cap and usage.orphans.count == 0
    proc = wb(str(ctx), "--build-arg", "N=7", root=root)
    assert cached_count(proc.stderr) == 3  # the newest build survived
    assert _du_b(root / "snapshots") < cap + MB


def test_a_prune_killed_halfway_leaves_orphans_not_dangling_records(registry: str, tmp_path: Path,
                                                                       root: Path) -> None:
    ctx = _project(tmp_path, "c", "FROM localhost:5055/busybox\nRUN head -c 1000000 /dev/urandom > /one\n"
                                  "RUN head -c 1000000 /dev/urandom > /two\nCOPY f.txt /f\n")
    wb(str(ctx), root=root)
    code = ("import os, signal; from pathlib import Path; from workbench.gc import pruning as gc\n"
            "real = gc._remove\n"
            "def crash(path, trash):\n"
            "    real(path, trash)\n"
            "    if 'snapshots' in str(path): os.kill(os.getpid(), signal.SIGKILL)\n"
            "gc._remove = crash\n"
            f"gc.prune(Path({str(root)!r}), all=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    usage = gc.du(root)
    assert usage.records == [] and usage.orphans.records == []  # records went first
    assert usage.orphans.snapshots and usage.orphans.scratch  # the rest of its files, and its trash dir
    out = tmp_path / "out"
    proc2 = wb(str(ctx), "-o", f"type=local,dest={out}", root=root)
    assert _reran(proc2.stderr) and (out / "f").read_text() == "c\n" and (out / "two").is_file()
    gc.prune(root)
    assert gc.du(root).orphans.count == 0


def test_a_no_cache_rebuilds_copy_waits_for_a_later_gc(registry: str, tmp_path: Path, root: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A --no-cache rebuild with unchanged content orphans its own copy of the stored result: the build's GC
    leaves it (a young orphan, while the cache fits its cap), a GC after the grace period, a GC over the cap and
    a prune remove it."""
    ctx = _project(tmp_path, "nc", "FROM localhost:5055/busybox\nCOPY f.txt /f\n")
    wb(str(ctx), root=root)
    kept = set(os.listdir(root / "snapshots"))
    wb(str(ctx), "--no-cache", root=root)
    young = gc.du(root).orphans.snapshots
    assert young and not set(young) & kept, young  # the rebuild's copy, not what the record keeps
    assert gc.maybe_gc(root).orphans == 0 and set(gc.du(root).orphans.snapshots) == set(young)
    assert cached_count(wb(str(ctx), root=root).stderr) >= 1  # the kept result still serves
    monkeypatch.setattr("workbench.gc.pruning.ORPHAN_GRACE", 0.0)
    assert gc.maybe_gc(root).orphans == len(young) and gc.du(root).orphans.count == 0

    monkeypatch.setattr("workbench.gc.pruning.ORPHAN_GRACE", 3600.0)
    wb(str(ctx), "--no-cache", root=root)
    assert gc.du(root).orphans.snapshots
    assert gc.maybe_gc(root, cap_bytes=1).orphans >= 1 and gc.du(root).orphans.count == 0  # over the cap: now
