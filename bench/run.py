#!/usr/bin/env python3
"""Benchmarks w1–w5 of the solver issue, cold and warm, as CLI processes; prints medians and BuildKit ratios.

cold: a fresh state root and a freshly started build server (the base image is pulled from the local
registry and extracted too, and nothing is known of the context);
warm: the same build again on that root (everything cached). No image is exported, as `buildctl build`
without --output. Needs the local registry (bash scripts/registry.sh).

Usage: .venv/bin/python bench/run.py [--repeat N] [--only w1,w3] [--no-server] [--verbose]

Run it on a quiet disk: see the note in main() on ext4 and deleted files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WORKBENCH = str(Path(sys.executable).parent / "workbench")
BASE = "localhost:5055/busybox"

# BuildKit v0.32 on the same machine (from the issue): cold, warm (None: not measured)
BUILDKIT = {"w1": (0.51, 0.067), "w2": (5.0, 0.47), "w3": (3.07, 0.083), "w4": (0.88, None), "w5": (0.81, None)}
# targets: cold ≤ 1.2×; warm ≤ 1.5× (w1, w3), ≤ 0.5× (w2)
WARM_TARGET = {"w1": 1.5, "w2": 0.5, "w3": 1.5}


def make_w1(ctx: Path) -> None:
    ctx.mkdir(parents=True)
    for i in range(200):
        (ctx / f"f{i:03}.txt").write_text(f"file {i}\n" * 20)
    (ctx / "Dockerfile").write_text(
        f"FROM {BASE}\nRUN echo one > /one && sleep 0.2\nCOPY . /src\nRUN ls -la /src > /listing\n"
        "RUN i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done > /loop\n"
        f"FROM {BASE} AS second\nRUN echo two > /two\n"
        f"FROM {BASE}\nCOPY --from=0 /one /one\nCOPY --from=second /two /two\n")


def make_w2(ctx: Path) -> None:
    """20,000 files in 100 dirs: 30 kB each, every 50th 200 kB (~690 MB)."""
    ctx.mkdir(parents=True)
    small, big = os.urandom(30_000), os.urandom(200_000)
    for n in range(20_000):
        d = ctx / f"d{n % 100:02}"
        if n < 100:
            d.mkdir()
        data = big if n % 50 == 0 else small
        (d / f"f{n:05}").write_bytes(data[:-8] + n.to_bytes(8, "big"))
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nCOPY . /ctx\nRUN du -s /ctx\n")


def make_w3(ctx: Path) -> None:
    ctx.mkdir(parents=True)
    steps = "".join(f"RUN echo step{i} > /s{i}\n" for i in range(50))
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\n" + steps)


def make_w4(ctx: Path) -> None:
    ctx.mkdir(parents=True)
    stages = "".join(f"FROM {BASE} AS s{i}\nRUN sleep 0.3 && echo {i} > /r{i}\n" for i in range(16))
    joins = "".join(f"COPY --from=s{i} /r{i} /r{i}\n" for i in range(16))
    (ctx / "Dockerfile").write_text(stages + f"FROM {BASE}\n" + joins)


def make_w5(ctx: Path) -> None:
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(
        f"FROM {BASE}\nRUN i=0; while [ $i -lt 200000 ]; do echo line $i; i=$((i+1)); done\n")


WORKLOADS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "w1": ("multi-stage, 200-file context", make_w1),
    "w2": ("20,000 files / 690 MB context", make_w2),
    "w3": ("50 chained RUN steps", make_w3),
    "w4": ("16 parallel stages, sleep 0.3", make_w4),
    "w5": ("one RUN printing 200,000 lines", make_w5),
}


# bytecode caches as an installed CLI has them (some shells set PYTHONDONTWRITEBYTECODE)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def build(ctx: Path, root: Path) -> float:
    t = time.perf_counter()
    subprocess.run([WORKBENCH, "build", "--root", str(root), "--progress", "plain", str(ctx)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t


def start_server() -> None:
    """Like buildkitd for buildctl: the resident build server is up before anything is timed."""
    subprocess.run([WORKBENCH, "build", "--root", "/nonexistent/root", "/nonexistent/ctx"], env=ENV,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while subprocess.run([WORKBENCH, "server", "status"], env=ENV, stdout=subprocess.DEVNULL).returncode != 0:
        if time.monotonic() > deadline:
            sys.exit("the build server did not start")
        time.sleep(0.1)


def ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--no-server", action="store_true", help="every build imports the engine itself")
    ap.add_argument("--verbose", action="store_true", help="print every run's time as well")
    args = ap.parse_args()
    if args.no_server:
        ENV["WORKBENCH_SERVER"] = "0"
    else:
        start_server()
    print(f"{'workload':<38}{'cold s':>8}{'warm s':>8}{'cold/BK':>9}{'warm/BK':>9}")
    # Everything is removed only at the end: on ext4 without a journal (this VM's disk), creating files within
    # a minute or so of deleting many (a previous root or context) scans every recently freed inode per new
    # file (recently_deleted() in ext4's inode allocator): a deletion between runs would be timed, not the build.
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as top:
        for key in args.only.split(","):
            title, make = WORKLOADS[key]
            cold, warm = [], []
            ctx = Path(top) / key / "ctx"
            make(ctx)
            for n in range(args.repeat):
                root = Path(top) / key / f"root{n}"
                if not args.no_server:  # a fresh server too: nothing known of the context yet (a new buildkitd)
                    subprocess.run([WORKBENCH, "server", "stop"], env=ENV, stdout=subprocess.DEVNULL)
                    start_server()
                os.sync()  # start from a disk with no writes pending (the context was just written)
                cold.append(build(ctx, root))
                os.sync()  # the cold build's writes are flushed before the warm builds are timed
                warm += [build(ctx, root) for _ in range(3)]
            c, w = statistics.median(cold), statistics.median(warm)
            if args.verbose:
                print(f"  {key} cold: {' '.join(f'{t:.2f}' for t in cold)}; warm: {' '.join(f'{t:.3f}' for t in warm)}")
            bk_cold, bk_warm = BUILDKIT[key]
            print(f"{key + ' ' + title:<38}{c:>8.2f}{w:>8.3f}{ratio(c, bk_cold):>9}{ratio(w, bk_warm):>9}", flush=True)


if __name__ == "__main__":
    main()
