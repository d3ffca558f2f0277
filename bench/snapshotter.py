#!/usr/bin/env python3
"""The copying snapshotter against overlayfs: cold builds of w1 and w3 (bench/run.py), as root, in-process.

Each build gets a fresh state root (the base image is pulled from the local registry both ways); prints the
median of each and the copy/overlay ratio, the figure `snapshot.manager.COPY_SLOWER` states.

Usage: .venv/bin/python bench/snapshotter.py [--repeat N] [--only w1,w3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import WORKBENCH, WORKLOADS  # noqa: E402


def build(ctx: Path, root: Path, snapshotter: str) -> float:
    env = {**os.environ, "WORKBENCH_SERVER": "0", "WORKBENCH_SNAPSHOTTER": snapshotter}
    t = time.perf_counter()
    subprocess.run([WORKBENCH, "build", "--root", str(root), "--progress", "plain", str(ctx)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="w1,w3")
    args = ap.parse_args()
    print(f"{'workload':<38}{'overlay s':>10}{'copy s':>8}{'copy/overlay':>14}")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as top:
        for key in args.only.split(","):
            title, make = WORKLOADS[key]
            ctx = Path(top) / key / "ctx"
            make(ctx)
            times: dict[str, list[float]] = {"overlay": [], "copy": []}
            for n in range(args.repeat):
                for mode in times:  # interleaved, so a busy moment of the machine weighs on both
                    times[mode].append(build(ctx, Path(top) / key / f"root-{mode}-{n}", mode))
            ov, cp = statistics.median(times["overlay"]), statistics.median(times["copy"])
            print(f"{key + ' ' + title:<38}{ov:>10.2f}{cp:>8.2f}{cp / ov:>13.2f}x", flush=True)


if __name__ == "__main__":
    main()
