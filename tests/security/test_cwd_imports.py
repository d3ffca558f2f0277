"""Helper processes workbench starts (the build server, a build's reaper) never import code from the current
directory: building inside a cloned repository that has a `workbench/` folder must not run it as root."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import WORKBENCH

PLANT = 'import os, pathlib; pathlib.Path(os.environ["WB_PLANT_MARK"]).write_text("ran")\n'


def test_a_workbench_folder_in_the_context_is_never_imported(tmp_path: Path, registry: str) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "workbench").mkdir(parents=True)
    (ctx / "workbench" / "__init__.py").write_text(PLANT)
    for module in ("reaper.py", "server.py", "client.py", "cli.py"):
        (ctx / "workbench" / module).write_text(PLANT)
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo hi\n")
    mark = tmp_path / "planted-code-ran"
    socket = tmp_path / "srv" / "server.sock"
    env = dict(os.environ, WB_PLANT_MARK=str(mark), WORKBENCH_SERVER_SOCKET=str(socket))
    try:
        for server in ("0", "1", "1"):  # in-process (reaper), then one that starts a server, then through it
            proc = subprocess.run(WORKBENCH + ["build", "--root", str(tmp_path / "root"), "--no-cache",
                                               "--progress", "plain", "."],
                                  cwd=ctx, env=dict(env, WORKBENCH_SERVER=server), capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            time.sleep(0.5)  # the server and the reaper start in the background
        assert socket.exists(), "no build server was started"
        assert not mark.exists(), "code from the context's workbench/ folder ran"
    finally:
        subprocess.run(WORKBENCH + ["server", "stop"], env=env, capture_output=True, timeout=30)
