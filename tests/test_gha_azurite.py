"""`workbench gha-server --azurite`: blobs in a real Azure blob emulator (azurite from npm), written by
workbench's own Azure client (Put Blob, and Put Block + Put Block List above 1 MiB) and by @actions/cache."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cache_remote import GhaServer, _run, _steps

NODE_DIR = Path(__file__).parent / "node"
AZURITE = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("node") is None or not AZURITE.exists():
        pytest.skip("needs node and the npm packages (bash scripts/install.sh)")
    port = _free_port()
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                             "--inMemoryPersistence", "--skipApiVersionCheck", "--disableProductStyleUrl",
                             "--disableTelemetry", "--loose", "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers (400 without a path): up
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "azurite did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gha(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhaServer]:
    server = GhaServer(tmp_path_factory.mktemp("gha"), "--azurite", azurite)
    yield server
    server.stop()


def test_round_trip_through_azurite(registry: str, gha: GhaServer, azurite: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\n"
                                    "RUN echo RAN-MARKER-BIG && head -c 2500000 /dev/urandom > /random\n")
    spec = f"type=gha,url_v2={gha.url},token={gha.token},scope=azurite,mode=max"
    before = gha.stats()
    _run(ctx, tmp_path / "r1", "--cache-to", spec)
    assert gha.stats().get("blob.PUT", 0) == before.get("blob.PUT", 0)  # nothing went to our own endpoint
    proc = _run(ctx, tmp_path / "r2", "--cache-from", spec, "-o", f"type=local,dest={tmp_path / 'out'}")
    steps = _steps(proc.stderr)
    assert len(steps) == 2 and set(steps.values()) == {"CACHED"}, proc.stderr
    assert "RAN-MARKER-BIG\n" not in proc.stderr
    assert (tmp_path / "out" / "random").stat().st_size == 2500000
    sizes = [int(e["size"]) for e in gha.entries() if str(e["key"]).startswith("buildkit-blob-")]  # type: ignore
    assert max(sizes) > 2 << 20 and min(sizes) < 1 << 20  # a block upload and a single Put Blob


def test_actions_cache_through_azurite(gha: GhaServer, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIONS_", "GITHUB_"))}
    env = {**base, "RUNNER_TEMP": str(tmp_path / "t"), "ACTIONS_RUNTIME_TOKEN": gha.token,
           "ACTIONS_CACHE_SERVICE_V2": "1", "ACTIONS_RESULTS_URL": gha.url}
    (tmp_path / "w").mkdir()
    proc = subprocess.run(["node", str(NODE_DIR / "cache-roundtrip.mjs"), "azurite-key-001"], cwd=tmp_path / "w",
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["exact"] == "azurite-key-001" and result["text"] == "hello from azurite-key-001\n"


