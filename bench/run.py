#!/usr/bin/env python3
"""Benchmarks: w1 (multi-stage, 200-file context) and w3 (50 RUN steps), cold and warm; prints medians.

Needs the local registry (bash scripts/registry.sh). Usage: .venv/bin/python bench/run.py [--repeat N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKBENCH = str(Path(sys.executable).parent / "workbench")

W1 = """FROM localhost:5055/busybox AS build
WORKDIR /src
COPY . .
RUN find . -type f | sort | xargs cat | md5sum > /digest
FROM localhost:5055/busybox
COPY --from=build /digest /digest
COPY files/ /app/files/
RUN wc -l /digest
"""


def make_w1(ctx: Path) -> None:
    (ctx / "files").mkdir(parents=True)
    for i in range(200):
        (ctx / "files" / f"f{i:03}.txt").write_text(f"file {i}\n" * 20)
    (ctx / "Dockerfile").write_text(W1)


def make_w3(ctx: Path) -> None:
    ctx.mkdir(parents=True)
    steps = "".join(f"RUN echo step {i} > /s{i}\n" for i in range(50))
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\n" + steps)


def build(ctx: Path, root: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([WORKBENCH, "build", "--root", str(root), "--progress", "plain", str(ctx),
                    "--output", f"type=oci,dest={out}"], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'workload':<34}{'cold (s)':>10}{'warm (s)':>10}")
    for name, make in [("w1 multistage, 200-file context", make_w1), ("w3 50 RUN steps", make_w3)]:
        cold, warm = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as td:
                ctx, root, out = Path(td) / "ctx", Path(td) / "root", Path(td) / "out.tar"
                make(ctx)
                cold.append(build(ctx, root, out))
                warm.append(build(ctx, root, out))
                shutil.rmtree(root, ignore_errors=True)
        print(f"{name:<34}{statistics.median(cold):>10.2f}{statistics.median(warm):>10.3f}")


if __name__ == "__main__":
    main()
