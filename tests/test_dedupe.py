"""Concurrent builds on one root run a shared step once; a --no-cache build never joins another's run."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import WORKBENCH, wb

SLOW = ("FROM localhost:5055/busybox\n"
        "RUN --mount=type=cache,id=probe,target=/probe sh -c 'echo ran >> /probe/count; sleep 2' && echo done > /d\n")
READ = "FROM localhost:5055/busybox\nRUN --mount=type=cache,id=probe,target=/probe cat /probe/count > /count\n"


def _start(ctx: Path, root: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", *extra, str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(tmp_path: Path, root: Path) -> int:
    reader = tmp_path / "reader"
    reader.mkdir(exist_ok=True)
    (reader / "Dockerfile").write_text(READ)
    out = tmp_path / "out"
    wb(str(reader), "--no-cache", "-o", f"type=local,dest={out}", root=root)
    return (out / "count").read_text().count("ran")


def test_two_concurrent_builds_run_the_slow_step_once(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SLOW)
    root = tmp_path / "root"
    procs = [_start(ctx, root) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    assert _runs(tmp_path, root) == 1
    assert any("reused the result of a concurrent build" in err for _, err in results)


def test_no_cache_build_does_not_join(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SLOW)
    root = tmp_path / "root"
    procs = [_start(ctx, root), _start(ctx, root, "--no-cache")]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    assert _runs(tmp_path, root) == 2
