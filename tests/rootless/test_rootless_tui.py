"""The TUI and the debugger as an unprivileged user (issue 21): `workbench tui` in the user's own tmux server with
a breakpoint on a RUN line and a shell in the paused step, `workbench debug` with a breakpoint and `exec`, and
break-on-error's shell in the failed step. Each shell is root of the build's user namespace on a pty of its own,
and nothing (no runc container, no mount in any of the user's processes) is left afterwards."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import runc_containers
from tests.rootless.conftest import PYTHON, RootlessUser
from tests.test_debug import BASE, PROMPT
from tests.test_tui_debug_tmux import _shell_prompt, _stop_reapers
from tests.test_tui_tmux import SIZED

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.real

DOCKERFILE = f"""\
FROM {BASE}
RUN echo one > /one
RUN cat /one > /two
"""


class UserTmux:
    """A tmux server of the user's own (`-S SOCK`), started and queried as that user."""

    def __init__(self, user: RootlessUser, sock: Path) -> None:
        self.user, self.sock = user, sock

    def __call__(self, *args: str) -> str:
        argv = self.user.command(["tmux", "-S", str(self.sock), *args])
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout

    def keys(self, session: str, *keys: str, literal: bool = False) -> None:
        for key in keys:  # one at a time: escape then r must not read as alt+r
            self("send-keys", "-t", session, *(["-l"] if literal else []), key)
            time.sleep(0.3)

    def wait(self, session: str, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline, screen = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            screen = self("capture-pane", "-p", "-t", session)
            if predicate(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out; the screen was:\n{screen}")


@pytest.fixture
def user_tmux(rootless_user: RootlessUser) -> Iterator[UserTmux]:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    sock = rootless_user.mkdir("rltui-tmux") / "sock"
    tmux = UserTmux(rootless_user, sock)
    yield tmux
    tmux("kill-server")


def _user_mounts_under(user: RootlessUser, root: Path) -> list[str]:
    """Mount points under `root` in any of the user's processes (its namespaces' mounts are not in ours)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or proc.stat().st_uid != user.uid:
                continue
            lines = (proc / "mountinfo").read_text().splitlines()
        except OSError:
            continue
        found |= {ln.split()[4] for ln in lines if ln.split()[4].startswith(str(root))}
    return sorted(found)


def _assert_nothing_left(user: RootlessUser, root: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left, mounted = runc_containers(root), _user_mounts_under(user, root)
        if not left and not mounted:
            return
        assert time.monotonic() < deadline, f"left: containers {left}, mounts {mounted}"
        time.sleep(0.2)


def _project(user: RootlessUser, name: str, dockerfile: str) -> Path:
    ctx = user.mkdir(name)
    user.write(ctx / "Dockerfile", dockerfile)
    return ctx


def _start_tui(user: RootlessUser, tmux: UserTmux, name: str, dockerfile: str) -> tuple[str, Path, Path]:
    """`workbench tui` as the user in a 120x40 pane of its tmux server: (session, state root, exit-status file)."""
    ctx = _project(user, f"rltui-{name}-ctx", dockerfile)
    work = user.mkdir(f"rltui-{name}-work")
    root, status = work / "root", work / "exit-status"
    command = (f"{SIZED} cd {ctx} && WORKBENCH_TUI_STATE={work}/state.json {PYTHON} -m workbench.cli tui "
               f"--root {root} --no-watch --theme dark; echo $? > {status}; sleep 5")
    tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", command)
    return name, root, status


def _pause_at_line_3(tmux: UserTmux, session: str) -> None:
    screen = tmux.wait(session, lambda s: "finished in" in s or "ERROR" in s, 120)
    assert "finished in" in screen, screen
    tmux.keys(session, "5", "Down", "Down", "F9", "Escape", "r")  # a breakpoint on line 3, the RUN
    screen = tmux.wait(session, lambda s: "paused before" in s, 60)
    assert "RUN cat /one > /two · Dockerfile line 3 (breakpoint)" in screen, screen


def _open_shell(tmux: UserTmux, session: str, step: str) -> None:
    tmux.keys(session, "e")
    screen = tmux.wait(session, lambda s: _shell_prompt(s) or "shell exited" in s, 30)
    assert f"workbench: a shell in {step}" in screen, screen
    assert _shell_prompt(screen), screen


def _wait_exit(status: Path, code: str) -> None:
    deadline = time.monotonic() + 20
    while not status.exists():
        assert time.monotonic() < deadline, "the app did not exit after q"
        time.sleep(0.1)
    assert status.read_text().strip() == code


def test_tui_breakpoint_on_run_and_a_shell_as_the_user(rootless_user: RootlessUser, user_tmux: UserTmux,
                                                       registry: str) -> None:
    user = rootless_user
    session, root, status = _start_tui(user, user_tmux, "wbrltui", DOCKERFILE)
    try:
        _pause_at_line_3(user_tmux, session)
        _open_shell(user_tmux, session, "[3/3] RUN cat /one > /two")
        user_tmux.keys(session, "echo U=$(id -u) F=$(cat /one) S=$(stty size)", literal=True)
        user_tmux.keys(session, "Enter")
        user_tmux.wait(session, lambda s: "U=0 F=one S=40 120" in s, 15)  # root of the namespace, the step's files
        user_tmux("resize-window", "-t", session, "-x", "100", "-y", "30")  # runc passes the new size on
        time.sleep(0.5)
        user_tmux.keys(session, "echo R=$(stty size)", literal=True)
        user_tmux.keys(session, "Enter")
        user_tmux.wait(session, lambda s: "R=30 100" in s, 15)
        user_tmux("resize-window", "-t", session, "-x", "120", "-y", "40")
        time.sleep(0.5)
        user_tmux.keys(session, "exit", literal=True)
        user_tmux.keys(session, "Enter")
        screen = user_tmux.wait(session, lambda s: "paused before" in s and "shell exited with code 0" in s, 15)
        assert not _shell_prompt(screen), screen

        user_tmux.keys(session, "c")
        screen = user_tmux.wait(session, lambda s: "finished in" in s and "build #2" in s, 60)
        assert "paused before" not in screen
        user_tmux.keys(session, "G", "e")  # after the build: a shell in the last step's result
        screen = user_tmux.wait(session, _shell_prompt, 30)
        assert "workbench: a shell in the filesystem of [3/3] RUN cat /one > /two" in screen, screen
        user_tmux.keys(session, 'test "$(id -u):$(cat /two)" = 0:one; exit $?', literal=True)  # 1 if not
        user_tmux.keys(session, "Enter")
        user_tmux.wait(session, lambda s: "shell exited with code 0" in s and "finished in" in s, 15)
        user_tmux.keys(session, "q")
        _wait_exit(status, "0")
        _assert_nothing_left(user, root)
    finally:
        user_tmux("kill-session", "-t", session)


def test_tui_break_on_error_shell_and_hang_up_as_the_user(rootless_user: RootlessUser, user_tmux: UserTmux,
                                                          registry: str) -> None:
    """Break on error holds the failed RUN: its shell sees what the command wrote; then the terminal goes away
    under the shell, with the reaper stopped first: the app itself ends the shell's container (runc would keep
    it running in the user's namespace after the app died)."""
    user = rootless_user
    session, root, _ = _start_tui(user, user_tmux, "wbrlerr",
                                  f"FROM {BASE}\nRUN echo partial > /half && false\n")
    try:
        user_tmux.wait(session, lambda s: "failed" in s and "f4 Shell" in s, 120)
        _open_shell(user_tmux, session, "[2/2] RUN echo partial")
        user_tmux.keys(session, "echo U=$(id -u) H=$(cat /half)", literal=True)
        user_tmux.keys(session, "Enter")
        user_tmux.wait(session, lambda s: "U=0 H=partial" in s, 15)
        assert len(runc_containers(root, running_only=True)) == 1  # the shell's
        _stop_reapers(root)
    finally:
        user_tmux("kill-session", "-t", session)
    _assert_nothing_left(user, root)


def _spawn_debug(user: RootlessUser, root: Path, ctx: Path, *args: str) -> pexpect.spawn:
    argv = user.command([PYTHON, "-m", "workbench.cli", "debug", "--root", str(root), *args, str(ctx)],
                        {"WORKBENCH_SERVER": "0", "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"})
    return pexpect.spawn(argv[0], argv[1:], cwd=str(user.home), encoding="utf-8", timeout=90, dimensions=(33, 111))


def _quit(child: pexpect.spawn, code: int) -> None:
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == code, child.before


def test_debug_breakpoint_exec_as_the_user(rootless_user: RootlessUser, registry: str) -> None:
    user = rootless_user
    ctx = _project(user, "rltui-dbg-ctx", DOCKERFILE)
    root = user.mkdir("rltui-dbg-root")
    child = _spawn_debug(user, root, ctx, "--break", "3")
    child.expect(r"Breakpoint before: \[3/3\] RUN cat /one > /two")
    child.expect(PROMPT)
    child.sendline("exec sh -c 'echo U=$(id -u) F=$(cat /one) S=$(stty size); echo x > /leak'")
    child.expect("U=0 F=one S=33 111")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    child.sendline("exec sh")  # an interactive shell on the pty, and `exit` returns to the REPL
    child.expect(r"/ #")
    child.sendline("cat /leak; echo in-$((6*7))")
    child.expect("in-42")
    child.sendline("exit")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    child.sendline("continue")
    child.expect("build finished")
    child.expect(PROMPT)
    _quit(child, 0)
    _assert_nothing_left(user, root)


def test_break_on_error_shell_in_the_failed_step_as_the_user(rootless_user: RootlessUser, registry: str) -> None:
    user = rootless_user
    ctx = _project(user, "rltui-dbg-err-ctx",
                   f"FROM {BASE}\nRUN echo partial > /half && chown 1000:1000 /half && false\n")
    root = user.mkdir("rltui-dbg-err-root")
    child = _spawn_debug(user, root, ctx, "--break", "99")
    child.expect(r"Failed: \[2/2\] RUN echo partial")
    child.expect("exit code: 1")
    child.expect(PROMPT)
    child.sendline("exec sh -c 'echo H=$(cat /half) O=$(stat -c %u:%g /half) U=$(id -u)'")
    child.expect("H=partial O=1000:1000 U=0")  # what the failed command wrote, its owner kept
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    child.sendline("continue")
    child.expect("build failed")
    child.expect(PROMPT)
    _quit(child, 1)
    _assert_nothing_left(user, root)


def test_debug_exec_without_subordinate_ids(nosub_user: RootlessUser, registry: str) -> None:
    """A single-uid namespace (no /etc/subuid line): the shell still gets a pty (no tty group to map)."""
    user = nosub_user
    ctx = _project(user, "rltui-dbg-nosub-ctx", DOCKERFILE)
    root = user.mkdir("rltui-dbg-nosub-root")
    child = _spawn_debug(user, root, ctx, "--break", "3")
    child.expect(r"Breakpoint before: \[3/3\] RUN cat /one > /two")
    child.expect(PROMPT)
    child.sendline("exec sh -c 'echo U=$(id -u) F=$(cat /one) S=$(stty size) T=$(tty)'")
    child.expect("U=0 F=one S=33 111 T=/dev/pts/0")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    child.sendline("continue")
    child.expect("build finished")
    child.expect(PROMPT)
    _quit(child, 0)
    _assert_nothing_left(user, root)


def test_a_step_user_the_namespace_cannot_map_is_one_line(nosub_user: RootlessUser, registry: str) -> None:
    """Without subordinate ids only uid 0 exists in the namespace: a shell in a `USER 1000` step cannot start,
    and the debugger says why and what the admin runs (runc said only "unable to setup user: invalid argument"
    and the shell `exit code 1`); a root shell in the step before still works."""
    user = nosub_user
    ctx = _project(user, "rltui-dbg-unmapped-ctx", f"FROM {BASE}\nRUN echo one > /one\nUSER 1000\nRUN id -u\n")
    root = user.mkdir("rltui-dbg-unmapped-root")
    child = _spawn_debug(user, root, ctx, "--break", "4")
    child.expect(r"Breakpoint before: \[3/3\] RUN id -u")
    child.expect(PROMPT)
    child.sendline("exec sh -c 'echo in-$((6*7))'")
    child.expect(r"error: rootless: this step runs as uid 1000, but only your own uid is mapped \(no subordinate ids "
                 r"in /etc/subuid / /etc/subgid\), so no process can start as it; an admin adds ids with: usermod "
                 r"--add-subuids 100000-165535 --add-subgids 100000-165535 wbnosub")
    child.expect(PROMPT)
    assert "in-42" not in child.before and "exit code" not in child.before and "runc" not in child.before
    child.sendline("continue")
    child.expect("build failed")
    child.expect(PROMPT)
    _quit(child, 1)
    _assert_nothing_left(user, root)


def test_a_user_past_the_subordinate_ranges_is_one_line(rootless_user: RootlessUser, registry: str) -> None:
    """With ranges, an id past them (65536 ids map 0-65535) fails the same way: the build says so once."""
    user = rootless_user
    ctx = _project(user, "rltui-unmapped-build", f"FROM {BASE}\nUSER 70000\nRUN true\n")
    failed = user.run(["build", "--progress", "plain", str(ctx)], env={"WORKBENCH_SERVER": "0"})
    assert failed.returncode == 1
    lines = [ln for ln in failed.stderr.splitlines() if ln.startswith("ERROR: ")]
    assert lines[-1] == ("ERROR: failed to solve: rootless: this step runs as uid 70000, outside the ids your "
                         "subordinate ranges in /etc/subuid / /etc/subgid map, so no process can start as it; an "
                         "admin widens them with: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
                         "wbtest"), failed.stderr[-2000:]
    assert "runc" not in failed.stderr
