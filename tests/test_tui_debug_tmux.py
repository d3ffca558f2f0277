"""The TUI debugger in a real terminal (tmux 120x40): a breakpoint set by keys, the pause, a shell in the paused
step (the app suspends, the terminal is the shell's, the app comes back), continue, quit with 0, and no runc
container left; a terminal closed under the shell takes the shell's container with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import runc_containers
from tests.test_tui_tmux import SIZED, _tmux, _wait_pane
from workbench.snapshot.scratch import mounts_under

DOCKERFILE = """\
FROM localhost:5055/busybox
RUN echo one > /one
COPY a.txt /a.txt
"""


def _shell_prompt(screen: str) -> bool:
    """busybox sh's prompt in the root directory is on the pane (capture-pane drops its trailing space)."""
    return any(line.rstrip() == "/ #" for line in screen.splitlines())


def _start_app(tmp_path: Path) -> tuple[str, Path, Path]:
    """`workbench tui` on DOCKERFILE in a 120x40 tmux pane: (session, build root, exit-status file)."""
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
    command = (f"{SIZED} cd {ctx} && WORKBENCH_TUI_STATE={tmp_path}/state.json {exe} tui --root {root} --no-watch "
               f"--theme dark; echo $? > {status}; sleep 5")
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    return session, root, status


def _pause_at_line_3(session: str) -> None:
    """After the first build: a breakpoint on line 3 (the COPY) from the editor, a rerun, the pause shown."""
    _wait_pane(session, lambda s: "finished in" in s, 90)
    for key in ("5", "Down", "Down", "F9", "Escape", "r"):  # one at a time: escape then r must not read as alt+r
        _tmux("send-keys", "-t", session, key)
        time.sleep(0.3)
    screen = _wait_pane(session, lambda s: "paused before" in s, 30)
    assert "COPY a.txt /a.txt · Dockerfile line 3 (breakpoint)" in screen, screen
    assert "· paused at line 3" in screen, screen


def _clean_after_kill(root: Path) -> None:
    """A killed app (a failed run, the hang-up test) can leave its shell's container and the pause's mounts
    behind: remove them as the next build in that root would (workbench cleans what dead processes left under
    its tmp), and whatever a still-dying app holds after that, directly."""
    from workbench.snapshot.manager import SnapshotManager
    from workbench.snapshot.overlay import unmount
    from workbench.snapshot.scratch import mounts_under

    deadline = time.monotonic() + 10
    while (mounts_under(root / "tmp") or runc_containers(root, running_only=True)) and time.monotonic() < deadline:
        time.sleep(0.2)  # the app is still going (quitting cleanly, or dying of the hang-up)
        SnapshotManager(root).cleanup()
    for state in root.glob("tmp/*/runc"):
        for cid in runc_containers(root):
            subprocess.run(["runc", "--root", str(state), "delete", "-f", cid], capture_output=True)
    for target in mounts_under(root / "tmp"):
        unmount(target)


def test_tui_breakpoint_shell_continue_in_tmux(registry: str, tmp_path: Path) -> None:
    session, root, status = _start_app(tmp_path)
    try:
        _pause_at_line_3(session)

        # the shell: the app steps aside, the pane is busybox's sh in the paused step's filesystem
        _tmux("send-keys", "-t", session, "e")
        screen = _wait_pane(session, _shell_prompt, 15)
        assert "workbench: a shell in [3/3] COPY a.txt /a.txt" in screen, screen
        assert "paused before" not in screen  # the app is suspended, not drawn under the shell
        _tmux("send-keys", "-t", session, "-l", "cat /one; echo marker-$((6*7))")
        _tmux("send-keys", "-t", session, "Enter")
        screen = _wait_pane(session, lambda s: "marker-42" in s, 15)
        lines = [ln.strip() for ln in screen.splitlines()]
        assert lines[lines.index("marker-42") - 1] == "one", screen  # /one, written by the step before
        # the shell has the terminal's TERM and size (its programs draw for the pane: clear, vi, less, top)
        term = _tmux("show-options", "-gv", "default-terminal").strip()
        _tmux("send-keys", "-t", session, "-l", "echo T=$TERM S=$(stty size)")
        _tmux("send-keys", "-t", session, "Enter")
        _wait_pane(session, lambda s: f"T={term} S=40 120" in s, 15)
        _tmux("send-keys", "-t", session, "-l", "echo x > /leak; exit")
        _tmux("send-keys", "-t", session, "Enter")
        screen = _wait_pane(session, lambda s: "paused before" in s and "shell exited with code 0" in s, 15)
        assert not _shell_prompt(screen) and "f4 Shell" in screen, screen  # the app is back, at the same pause

        _tmux("send-keys", "-t", session, "c")
        screen = _wait_pane(session, lambda s: "finished in" in s and "build #2" in s, 30)
        assert "paused before" not in screen
        _tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while not status.exists():
            assert time.monotonic() < deadline, "the app did not exit after q"
            time.sleep(0.05)
        assert status.read_text().strip() == "0"
        assert runc_containers(root) == []
        assert not list(root.glob("snapshots/*/fs/leak")), "the shell's change reached a snapshot"
    finally:
        _tmux("kill-session", "-t", session)
        _clean_after_kill(root)


def test_a_closed_terminal_ends_the_debug_shell_with_the_app(registry: str, tmp_path: Path) -> None:
    """The terminal goes away (hang-up) while the user is in the shell: the app itself ends the shell's container
    and undoes the pause's mounts before it goes (runc would keep the container running after the app died, and
    the overlay would stay mounted until the next command). The app's reaper, which cleans up after a process
    killed outright, is stopped first, so only the app's own clean-up counts."""
    session, root, _ = _start_app(tmp_path)
    try:
        _pause_at_line_3(session)
        _tmux("send-keys", "-t", session, "e")
        _wait_pane(session, _shell_prompt, 15)
        assert len(runc_containers(root, running_only=True)) == 1  # the shell's
        assert mounts_under(root / "tmp"), "the pause's workspace should be mounted"
        _stop_reapers(root)
    finally:
        _tmux("kill-session", "-t", session)
    try:
        _assert_nothing_left(root)
    finally:
        _clean_after_kill(root)


def _stop_reapers(root: Path) -> None:
    """SIGKILL the reapers (workbench.reaper) watching builds on `root`."""
    tmp = os.path.realpath(root / "tmp")
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"workbench.reaper" in args and tmp.encode() in args:
            os.kill(int(proc.name), signal.SIGKILL)


def _assert_nothing_left(root: Path, timeout: float = 15) -> None:
    """Within `timeout` of a hang-up, no container of the app is known to runc and nothing under ROOT/tmp is
    mounted, without anyone cleaning up after the app (not the next command, not the test)."""
    deadline = time.monotonic() + timeout
    while True:
        left, mounted = runc_containers(root), mounts_under(root / "tmp")
        if not left and not mounted:
            return
        assert time.monotonic() < deadline, f"left after the hang-up: containers {left}, mounts {mounted}"
        time.sleep(0.1)
