"""`workbench check --addr ADDR`: the build checks are static, so they run here whatever the daemon: the same
output and exit status as without --addr (no daemon is asked anything); a bad --addr is refused as on build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**{k: v for k, v in os.environ.items() if k != "BUILDKIT_HOST"}, "WORKBENCH_SERVER": "0"}
WARNED = """FROM busybox AS Build
ARG unused
RUN echo hi
copy a.txt /a
CMD echo not json
"""


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "check", *args], capture_output=True, text=True,
                          timeout=120, env={**ENV, **(env or {})})


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_same_output_with_and_without_addr(tmp_path: Path, fmt: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(WARNED)
    (ctx / "a.txt").write_text("a\n")
    common = ["--root", str(tmp_path / "root"), "--format", fmt, str(ctx)]
    local = check(*common)
    assert local.returncode == 1 and (local.stdout + local.stderr).strip()  # the checks found something
    nowhere = tmp_path / "no-daemon.sock"  # nothing listens: the checks never ask the daemon
    for remote in (check("--addr", f"unix://{nowhere}", *common),
                   check("--addr", "docker:///nonexistent/docker.sock", *common),
                   check(*common, env={"BUILDKIT_HOST": f"unix://{nowhere}"})):
        assert (remote.returncode, remote.stdout, remote.stderr) == (local.returncode, local.stdout, local.stderr)


def test_a_bad_addr_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    r = check("--addr", "ftp://x", str(tmp_path))
    assert r.returncode == 2 and "--addr 'ftp://x'" in r.stderr and r.stdout == ""
