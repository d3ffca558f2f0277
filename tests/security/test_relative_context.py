"""Relative paths (`workbench build .`, `-f`, `--root`, `--output`) name what the user meant, never runc's bundle."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import WORKBENCH

DOCKERFILE = """FROM localhost:5055/busybox
RUN --mount=target=/m ls /m > /listing
RUN --mount=type=bind,source=data.txt,target=/d cat /d > /copy
"""


def build_relative(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + ["build", "--progress", "plain", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_a_relative_context_is_what_bind_mounts_see(tmp_path: Path, registry: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "data.txt").write_text("from the context\n")
    proc = build_relative(ctx, "--root", "../root", "--output", "type=local,dest=../out", ".")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "listing").read_text().split() == ["Dockerfile", "data.txt"]
    assert (tmp_path / "out" / "copy").read_text() == "from the context\n"
    assert (tmp_path / "root" / "cache.db").exists() and not (ctx / "root").exists()


def test_the_same_context_by_relative_and_absolute_path_shares_its_cache(tmp_path: Path, registry: str) -> None:
    """The result cached from `build .` is the real context's: an absolute-path build of it is all cached."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "data.txt").write_text("x\n")
    first = build_relative(tmp_path, "--root", "root", "-f", "ctx/Dockerfile", "ctx")
    assert first.returncode == 0, first.stderr[-2000:]
    second = build_relative(Path("/"), "--root", str(tmp_path / "root"), "--output",
                            f"type=local,dest={tmp_path / 'out'}", str(ctx))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "CACHE MISS" not in second.stderr
    assert (tmp_path / "out" / "listing").read_text().split() == ["Dockerfile", "data.txt"]
