"""The TUI debugger in a real terminal (tmux 120x40): a breakpoint set by keys, the pause, continue, quit with 0,
and no runc container left."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_tui_tmux import _tmux, _wait_pane

DOCKERFILE = """\
FROM localhost:5055/busybox
RUN echo one > /one
COPY a.txt /a.txt
"""


def _runc_containers(root: Path) -> list[str]:
    found = []
    for state in root.glob("tmp/*/runc"):
        proc = subprocess.run(["runc", "--root", str(state), "list", "--format", "json"], capture_output=True,
                              text=True)
        found += [c["id"] for c in json.loads(proc.stdout or "null") or []]
    return found


def test_tui_breakpoint_shell_continue_in_tmux(registry: str, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("hello\n")
    root = tmp_path / "root"
    exe = Path(sys.executable).parent / "workbench"
    status = tmp_path / "exit-status"
    session = f"wbdbg{time.monotonic_ns()}"
    command = (f"cd {ctx} && WORKBENCH_TUI_STATE={tmp_path}/state.json {exe} tui --root {root} --no-watch "
               f"--theme dark; echo $? > {status}; sleep 5")
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    try:
        _wait_pane(session, lambda s: "finished in" in s, 90)
        for key in ("5", "Down", "F9", "Escape", "r"):  # one at a time: escape then r must not read as alt+r
            _tmux("send-keys", "-t", session, key)
            time.sleep(0.3)
        screen = _wait_pane(session, lambda s: "paused before" in s, 30)
        assert "RUN echo one > /one · Dockerfile line 2 (breakpoint)" in screen, screen
        assert "· paused" in screen and "workdir /" in screen and "user root" in screen

        _tmux("send-keys", "-t", session, "c")
        screen = _wait_pane(session, lambda s: "finished in" in s and "build #2" in s, 30)
        assert "paused before" not in screen
        _tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while not status.exists():
            assert time.monotonic() < deadline, "the app did not exit after q"
            time.sleep(0.05)
        assert status.read_text().strip() == "0"
        assert _runc_containers(root) == []
    finally:
        _tmux("kill-session", "-t", session)
