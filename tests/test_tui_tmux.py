"""The TUI in a real terminal (tmux, 120x40): a build shows up, an edit on disk reruns it, `q` exits 0."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

DOCKERFILE = """\
FROM localhost:5055/busybox
RUN echo alpha > /alpha
COPY a.txt /a.txt
RUN cat /a.txt
"""

SIZED = "unset COLUMNS LINES; until [ \"$(stty size)\" = '40 120' ]; do sleep 0.05; done;"
"""A prefix for a 120x40 pane's command, so the app lays out for the pane's real size: the pytest process has
GNU readline loaded, which puts COLUMNS=80 LINES=24 into the C environment its children (tmux's server, the
app) inherit, and Textual prefers those to the tty's size; a detached pane may also get its -x/-y size a moment
after its command starts."""


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10).stdout


def _wait_pane(session: str, predicate: object, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if predicate(screen):  # type: ignore[operator]
            return screen
        time.sleep(0.05)
    raise AssertionError(f"timed out; the screen was:\n{screen}")


def test_tui_in_tmux_builds_reruns_on_edit_and_quits(registry: str, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("hello\n")
    exe = Path(sys.executable).parent / "workbench"
    status = tmp_path / "exit-status"
    session = f"wbtui{time.monotonic_ns()}"
    command = (f"{SIZED} cd {ctx} && WORKBENCH_TUI_STATE={tmp_path}/state.json {exe} tui --root {tmp_path}/root "
               f"--theme dark; echo $? > {status}; sleep 5")
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    try:
        screen = _wait_pane(session, lambda s: "finished in" in s, 90)
        for step in ("FROM localhost:5055/busybox", "RUN echo alpha > /alpha", "COPY a.txt /a.txt", "RUN cat /a.txt"):
            assert any(step in ln and "✔" in ln for ln in screen.splitlines()), f"{step} not done:\n{screen}"

        (ctx / "Dockerfile").write_text(DOCKERFILE + "RUN echo added-step && sleep 3\n")
        saved = time.monotonic()
        screen = _wait_pane(session, lambda s: any("▶" in ln and "RUN echo added-step" in ln
                                                   for ln in s.splitlines()), 2.0)
        assert time.monotonic() - saved < 2.0
        assert "build #2 running" in screen
        assert any("≡" in ln and "RUN echo alpha" in ln for ln in screen.splitlines())  # now cached

        _tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while not status.exists():
            assert time.monotonic() < deadline, "the app did not exit after q"
            time.sleep(0.05)
        assert status.read_text().strip() == "0"
    finally:
        _tmux("kill-session", "-t", session)
