"""`exec` shells of `workbench debug` through a real pseudo-terminal (pexpect): they get the user's terminal (TERM,
size), and where no shell can start the REPL says why (a FROM not run yet, a filesystem without sh)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, runc_containers
from tests.test_debug import BASE, PROMPT, _project
from tests.test_tui_debug_tmux import _assert_nothing_left, _stop_reapers
from workbench.snapshot.scratch import mounts_under

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.real


def _spawn(root: Path, ctx: Path, *args: str, term: str = "xterm-256color",
           size: tuple[int, int] = (40, 160)) -> pexpect.spawn:
    env = dict(os.environ, WORKBENCH_SERVER="0", PROMPT_TOOLKIT_NO_CPR="1", TERM=term)
    return pexpect.spawn(WORKBENCH[0], ["debug", "--root", str(root), *args, str(ctx)], cwd=str(ctx.parent),
                         encoding="utf-8", timeout=60, dimensions=size, env=env)


def _quit(child: pexpect.spawn) -> None:
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()


def test_exec_gets_the_users_term_and_size(tmp_path: Path, registry: str) -> None:
    """`clear`, vi, less and top need TERM, and a size from the shell's first instant (runc's own resize comes
    a moment after the process started: a quick `stty size` saw none)."""
    ctx = _project(tmp_path, f"FROM {BASE}\nENV TERM=dumb\nRUN echo one > /one\n")
    root = tmp_path / "root"
    child = _spawn(root, ctx, "--break", "3", term="screen-256color", size=(33, 111))
    child.expect(r"Breakpoint before: \[2/2\] RUN echo one")
    child.expect(PROMPT)
    child.sendline("exec sh -c 'echo T=$TERM S=$(stty size)'")
    child.expect("T=screen-256color S=33 111")  # the terminal's TERM, over the image's
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    child.sendline("exec clear")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    _quit(child)
    assert runc_containers(root) == []


def test_exec_before_from_says_why_no_shell_starts(tmp_path: Path, registry: str) -> None:
    """A breakpoint on FROM stops before the image is pulled: there is no filesystem yet, and `exec` says so
    instead of `exit code 1`; after `next` the shell runs in the image."""
    ctx = _project(tmp_path, f"FROM {BASE}\nRUN echo one > /one\n")
    root = tmp_path / "root"
    child = _spawn(root, ctx, "--break", "1")
    child.expect(r"Breakpoint before: \[1/2\] FROM localhost:5055/busybox")
    child.expect(PROMPT)
    child.sendline("exec sh")
    child.expect(r"error: this FROM has not run yet, so there is no filesystem to run sh in: step over it \(next\) "
                 r"to pull the image and stop at the step after it")
    child.expect(PROMPT)
    assert "exit code" not in child.before
    child.sendline("next")
    child.expect(r"Stopped before: \[2/2\] RUN echo one")
    child.expect(PROMPT)
    child.sendline("exec sh -c 'echo in-$((6*7))'")
    child.expect("in-42")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    _quit(child)
    assert runc_containers(root) == []


def test_exec_in_a_filesystem_without_sh_says_so(tmp_path: Path, registry: str) -> None:
    """In a FROM scratch stage there is no shell to start (runc's `exec: "sh": executable file not found` went by
    with `exit code 1`); a program the filesystem has still runs."""
    ctx = _project(tmp_path, f"FROM scratch AS bare\nCOPY a.txt /a.txt\nFROM {BASE}\nCOPY --from=bare /a.txt /b.txt\n"
                             "RUN cat /b.txt\n")
    root = tmp_path / "root"
    child = _spawn(root, ctx, "--break", "4")
    child.expect(r"Breakpoint before: \[stage-1 2/3\] COPY --from=bare")
    child.expect(PROMPT)
    child.sendline("exec /a.txt")  # a file of the other stage: not in this step's filesystem
    child.expect(r"error: this step's filesystem has no /a.txt; exec a command from it, or break on a later step")
    child.expect(PROMPT)
    _quit(child)

    child = _spawn(root, ctx, "--break", "2")
    child.expect(r"Breakpoint before: \[bare 1/1\] COPY a.txt /a.txt")
    child.expect(PROMPT)
    child.sendline("exec sh")
    child.expect(r"error: this step's filesystem has no sh \(looked in \$PATH=/usr/local/sbin:[^)]*\); "
                 r"exec a command from it, or break on a later step")
    child.expect(PROMPT)
    assert "exit code" not in child.before
    _quit(child)
    assert runc_containers(root) == []


def test_a_hang_up_in_exec_leaves_nothing_mounted_or_running(tmp_path: Path, registry: str) -> None:
    """The terminal goes away while an `exec` shell runs: the REPL itself ends the shell's container and undoes
    the pause's mounts before it exits (its reaper, which would clean up after a process killed outright, is
    stopped first)."""
    ctx = _project(tmp_path, f"FROM {BASE}\nRUN echo one > /one\n")
    root = tmp_path / "root"
    child = _spawn(root, ctx, "--break", "2")
    child.expect(r"Breakpoint before: \[2/2\]")
    child.expect(PROMPT)
    child.sendline("exec sh")
    child.sendline("echo inside-$((6*7)); sleep 1000")
    child.expect("inside-42")
    assert runc_containers(root, running_only=True) and mounts_under(root / "tmp")
    _stop_reapers(root)
    child.kill(signal.SIGHUP)
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    _assert_nothing_left(root)
