"""Builds killed with SIGKILL at random moments: the next build succeeds and is correct, and after a prune
nothing is left behind (no orphan snapshots, temp dirs, dangling records or mounts)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import WORKBENCH, wb
from workbench import gc
from workbench.cache.store import CacheStore
from workbench.snapshot.scratch import mounts_under

DOCKERFILE = """FROM localhost:5055/busybox
ARG N
COPY a.txt /a.txt
RUN head -c 2000000 /dev/urandom > /r1 && cd / && md5sum r1 > r1.md5 && echo $N > /n
RUN sleep 0.2 && cat /a.txt /n > /an
COPY b.txt /b.txt
RUN head -c 1000000 /dev/urandom > /r2 && cd / && md5sum r2 > r2.md5 && sleep 0.1
RUN sleep 0.2 && cat /an /b.txt > /all
"""


def _check_output(out: Path, n: int) -> None:
    assert (out / "an").read_text() == f"a\n{n}\n"
    assert (out / "all").read_text() == f"a\n{n}\nb\n"
    assert (out / "b.txt").read_text() == "b\n"
    for name in ("r1", "r2"):
        proc = subprocess.run(["md5sum", "-c", f"{name}.md5"], cwd=out, capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"


def test_killed_builds_leave_a_usable_cache_and_prune_leaves_no_orphans(
    registry: str, tmp_path: Path, root: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    seed = int(os.environ.get("CRASH_SEED", time.time()))
    rng = random.Random(seed)
    # Kills land within the time one whole build takes here (base pulled, every RUN re-run): a faster machine
    # (or the build server) must not let the victims finish before they are killed.
    wb("--build-arg", "N=-1", str(ctx), root=root)
    started = time.monotonic()
    wb("--build-arg", "N=-2", str(ctx), root=root)
    build_time = time.monotonic() - started
    killed_mid_build = left_mounted = 0
    for n in range(20):
        cmd = WORKBENCH + ["build", "--root", str(root), "--progress", "plain", "--build-arg", f"N={n}", str(ctx)]
        victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.9 * build_time))
        if victim.poll() is None:
            killed_mid_build += 1
        victim.send_signal(signal.SIGKILL)  # its runc containers and mounts stay behind, as in a real crash
        victim.wait()
        left_mounted += bool(mounts_under(root / "tmp"))
        out = tmp_path / f"out{n}"
        proc = wb("--build-arg", f"N={n}", "-o", f"type=local,dest={out}", str(ctx), root=root, check=False)
        assert proc.returncode == 0, f"seed {seed}, build {n}:\n{proc.stderr[-3000:]}"
        _check_output(out, n)
    assert killed_mid_build >= 10, f"seed {seed}: only {killed_mid_build} builds were still running when killed"
    print(f"seed {seed}: build {build_time:.2f} s, {killed_mid_build} killed mid-build, "
          f"{left_mounted} left mounts behind")

    gc.prune(root)
    usage = gc.du(root)
    o = usage.orphans
    assert (o.snapshots, o.scratch, o.blobs, o.records, o.mounts) == ([], [], [], [], []), f"seed {seed}: {o}"
    assert mounts_under(root) == []
    assert list((root / "tmp").iterdir()) == []
    assert list((root / "content" / "ingest").iterdir()) == []
    snapshots = {p.name for p in (root / "snapshots").iterdir()} - {"empty"}
    store = CacheStore(root / "cache.db")
    referenced = {s for r in store.results() for s in r.chain}
    store.close()
    assert snapshots == referenced, f"seed {seed}"
    assert usage.records and all(r.kind == "layer" for r in usage.records)  # plain prune keeps base layers
