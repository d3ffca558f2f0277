"""`workbench du` / `workbench prune` and the automatic GC after a build, through the CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import WORKBENCH, wb


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + list(args), capture_output=True, text=True, timeout=120, env=env)


def test_du_prune_and_automatic_gc(registry: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN head -c 3000000 /dev/urandom > /blob\n")
    wb(str(ctx), root=root)
    du = cli("du", "--root", str(root))
    assert du.returncode == 0 and "Total:" in du.stdout and "RECLAIMABLE" in du.stdout
    bad = cli("prune", "--root", str(root), "--filter", "since=1h")
    assert bad.returncode == 2 and "until=DURATION" in bad.stderr
    pruned = cli("prune", "--all", "--root", str(root))
    assert pruned.returncode == 0 and "Total:" in pruned.stdout
    after = cli("du", "--root", str(root)).stdout.split()
    assert after[-2:] == ["Total:", "0B"], after
    # with a small cap the store is trimmed after each build that ran something
    env = {**os.environ, "WORKBENCH_GC_CAP": "1MB"}
    for n in range(3):
        (ctx / "Dockerfile").write_text(f"FROM localhost:5055/busybox\nRUN head -c 3000000 /dev/urandom > /b{n}\n")
        proc = subprocess.run(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    snapshots = root / "snapshots"
    blobs = sum(1 for p in snapshots.rglob("b*") if p.is_file() and p.parent.name == "fs")
    assert blobs == 0  # every 3 MB result is over the 1 MB cap: GC removed it after its build
