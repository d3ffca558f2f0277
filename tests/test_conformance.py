"""Dockerfile conformance: each case's exported image must equal what BuildKit v0.20 built."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFORMANCE, WORKBENCH

sys.path.insert(0, str(CONFORMANCE))
import ocitree  # noqa: E402
import run as conformance_run  # noqa: E402

CASES = sorted(p.name for p in (CONFORMANCE / "cases").iterdir() if (p / "Dockerfile").exists())
# Cases that need frontend features still to come (the frontend issue): heredocs, RUN --mount, secrets,
# ADD, ONBUILD triggers, ARG re-declaration rules.


@pytest.mark.parametrize("case", CASES)
def test_case(case: str, registry: str, tmp_path: Path) -> None:
    case_dir = CONFORMANCE / "cases" / case
    meta = conformance_run.load_case(str(case_dir))
    expected = json.loads((case_dir / "expected.json").read_text())
    out = tmp_path / "out.tar"
    cmd = conformance_run.workbench_cmd(str(case_dir), meta, str(out))
    cmd = WORKBENCH + ["build", "--root", str(tmp_path / "root")] + cmd[2:]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if expected.get("fails"):
        assert proc.returncode != 0, "built, but BuildKit fails this case"
        assert re.search(meta.get("error_pattern", ""), proc.stdout + proc.stderr, re.I), proc.stderr[-800:]
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    base = ocitree.describe(registry)["tree"]
    diff = conformance_run.diff(expected, ocitree.against_base(ocitree.describe(str(out)), base))
    assert not diff, "\n".join(diff)
    # Re-running without changes is entirely cached and runs no container.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    started = [ln for ln in again.stderr.splitlines() if "CACHE MISS" in ln]
    assert not started, started


def test_run_py_check_passes_on_all_cases(registry: str, tmp_path: Path) -> None:
    """The shared runner itself (`run.py check`), on every case, run as its README says: from its own folder,
    with relative paths (contexts, Dockerfiles and outputs), where a relative context once bind-mounted
    runc's bundle instead (v13-mount-bind)."""
    env = dict(os.environ, WB=" ".join(WORKBENCH), WORKBENCH_ROOT=str(tmp_path / "root"), BASE_TAR=registry)
    proc = subprocess.run([sys.executable, "run.py", "check", "cases"], cwd=CONFORMANCE,
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.stdout.strip().endswith(f"{len(CASES)} passed, 0 failed"), proc.stdout[-3000:]
