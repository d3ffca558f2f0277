"""`workbench dap` driven by VS Code's own DAP client library (`@vscode/debugadapter-testsupport`, tests/dap)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, runc_containers

pytestmark = pytest.mark.real

DAP_DIR = Path(__file__).parent / "dap"
BASE = "localhost:5055/busybox"


def test_dap_client_library_drives_real_builds(registry: str, root: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs node (the DAP client library's runtime)")
    assert (DAP_DIR / "node_modules" / "@vscode" / "debugadapter-testsupport").is_dir(), \
        "npm packages of tests/dap not installed (bash scripts/install.sh)"
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, WORKBENCH_SERVER="0", DAP_ROOT=str(root), DAP_BASE=BASE, DAP_WORK=str(work),
               DAP_ADAPTER=json.dumps([*WORKBENCH, "dap"]))
    proc = subprocess.run([node, "--test", "--test-reporter=spec", "dap.test.mjs"], cwd=DAP_DIR, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, \
        f"node --test failed ({proc.returncode}):\n{proc.stdout[-12000:]}\n{proc.stderr[-3000:]}"
    # after all the sessions (finished, failed, disconnected): nothing mounted under the root, no container
    assert runc_containers(root) == []
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]
