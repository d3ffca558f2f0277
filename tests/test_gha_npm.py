"""GitHub's own cache client (`@actions/cache` from npm) saves and restores through `workbench gha-server`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cache_remote import GhaServer

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def gha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhaServer]:
    if shutil.which("node") is None or shutil.which("zstd") is None:
        pytest.skip("needs node and zstd")
    if not (NODE_DIR / "node_modules" / "@actions" / "cache").is_dir():
        pytest.skip("npm packages not installed (bash scripts/install.sh)")
    server = GhaServer(tmp_path_factory.mktemp("gha"))
    yield server
    server.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_actions_cache_save_and_restore(gha: GhaServer, tmp_path: Path, version: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIONS_", "GITHUB_"))}
    env = {**base, "RUNNER_TEMP": str(tmp_path / "runner-temp"), "ACTIONS_RUNTIME_TOKEN": gha.token}
    if version == "v2":
        env.update({"ACTIONS_CACHE_SERVICE_V2": "1", "ACTIONS_RESULTS_URL": gha.url})
    else:
        env["ACTIONS_CACHE_URL"] = gha.url
    work = tmp_path / "work"
    work.mkdir()
    before = gha.stats()
    key = f"npm-{version}-linux-123"
    proc = subprocess.run(["node", str(NODE_DIR / "cache-roundtrip.mjs"), key], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["exact"] == key and result["byPrefix"] == key and result["miss"] is None
    assert result["text"] == f"hello from {key}\n" and result["big"] == 3 * 1024 * 1024
    assert isinstance(result["id"], int) and result["id"] > 0
    after = gha.stats()
    used = {k for k in after if after[k] != before.get(k, 0)}
    if version == "v2":  # Twirp calls, the upload through the Azure SDK, the download from the signed URL
        assert {"v2.CreateCacheEntry", "v2.FinalizeCacheEntryUpload", "v2.GetCacheEntryDownloadURL",
                "blob.PUT", "blob.GET"} <= used, used
        assert not any(k.startswith("v1.") for k in used)
    else:
        assert {"v1.reserve", "v1.upload", "v1.commit", "v1.query", "blob.GET"} <= used, used
        assert not any(k.startswith("v2.") for k in used)
