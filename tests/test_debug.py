"""`workbench debug` driven through a real pseudo-terminal (pexpect): breakpoints, shells, diff, abort."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, runc_containers, wb

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.real

BASE = "localhost:5055/busybox"
PROMPT = r"\(debug\)"


def _spawn(*args: str, cwd: Path, **env: str) -> pexpect.spawn:
    child = pexpect.spawn(WORKBENCH[0], ["debug", *args], cwd=str(cwd), encoding="utf-8", timeout=60,
                          dimensions=(40, 160),
                          env=dict(os.environ, WORKBENCH_SERVER="0", PROMPT_TOOLKIT_NO_CPR="1", **env))
    return child


def continue_to_the_end(child: pexpect.spawn, outcome: str = "build finished", status: int = 0) -> None:
    """`continue` until the build ends with `outcome`, then `quit`: the session exits with `status`."""
    child.sendline("continue")
    child.expect(outcome)
    child.expect(PROMPT)
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == status


def _project(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_break_exec_leaves_no_trace(tmp_path: Path, registry: str) -> None:
    ctx = _project(tmp_path, f"FROM {BASE}\nRUN echo one > /one\nRUN cat /one > /two\nCOPY a.txt /a.txt\n")
    root, out = tmp_path / "root", tmp_path / "out"
    child = _spawn("--root", str(root), "-o", f"type=local,dest={out}", str(ctx), cwd=tmp_path)
    child.expect(PROMPT)
    child.sendline("break 3")
    child.expect("breakpoint 1 at line 3")
    child.expect(PROMPT)
    child.sendline("continue")
    child.expect(r"Breakpoint before: \[3/4\] RUN cat /one > /two \(Dockerfile:3\)")
    child.expect(PROMPT)
    child.sendline("info")
    child.expect("workdir: /")
    child.expect(PROMPT)
    child.sendline("exec cat /one")
    child.expect("one")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    child.sendline("exec sh -c 'echo x > /leak'")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    child.sendline("ls /")
    child.expect("leak")  # the shell's change is visible for the rest of the pause
    child.expect(PROMPT)
    child.sendline("cat /one")
    child.expect("one")
    child.expect(PROMPT)
    continue_to_the_end(child)
    assert (out / "two").read_text() == "one\n"
    assert not (out / "leak").exists()
    rebuilt = wb("--output", f"type=local,dest={tmp_path / 'out2'}", str(ctx), root=root)
    assert "CACHE MISS" not in rebuilt.stderr
    assert not (tmp_path / "out2" / "leak").exists()


def test_next_and_diff_between_steps(tmp_path: Path, registry: str) -> None:
    ctx = _project(tmp_path, f"FROM {BASE}\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN echo done\n")
    child = _spawn("--root", str(tmp_path / "root"), str(ctx), cwd=tmp_path)
    child.expect(PROMPT)
    child.sendline("break 2")
    child.expect(PROMPT)
    child.sendline("continue")
    child.expect(r"Breakpoint before: \[2/4\] RUN echo one")
    child.expect(PROMPT)
    child.sendline("next")
    child.expect(r"Stopped before: \[3/4\] COPY a.txt /a.txt")
    child.expect(PROMPT)
    child.sendline("next")
    child.expect(r"Stopped before: \[4/4\] RUN echo done")
    child.expect(PROMPT)
    child.sendline("diff 2 3")  # step 2 = RUN echo one, step 3 = the COPY
    child.expect(r"A /a.txt \(6 B\)")
    child.expect(PROMPT)
    child.sendline("cat /a.txt 3")
    child.expect("alpha")
    child.expect(PROMPT)
    continue_to_the_end(child)


def test_break_on_error_sees_what_the_failed_command_wrote(tmp_path: Path, registry: str) -> None:
    ctx = _project(tmp_path, f"FROM {BASE}\nRUN echo partial > /half && mkdir /made && false\n")
    child = _spawn("--root", str(tmp_path / "root"), "--break", "99", str(ctx), cwd=tmp_path)
    child.expect(r"Failed: \[2/2\] RUN echo partial")
    child.expect("exit code: 1")
    child.expect(PROMPT)
    child.sendline("exec cat /half")
    child.expect("partial")
    child.expect(PROMPT)
    child.sendline("ls /")
    child.expect("made/")
    child.expect(PROMPT)
    continue_to_the_end(child, "build failed", 1)


def test_a_running_shell_does_not_block_abort_or_quit(tmp_path: Path, registry: str) -> None:
    ctx = _project(tmp_path, f"FROM {BASE}\nRUN echo one > /one\n")
    root = tmp_path / "root"
    child = _spawn("--root", str(root), "--break", "2", str(ctx), cwd=tmp_path)
    child.expect(r"Breakpoint before: \[2/2\]")
    child.expect(PROMPT)
    child.sendline("exec sh")
    child.sendline("echo inside-$((6*7)); sleep 1000")
    child.expect("inside-42")
    assert runc_containers(root), "the shell's container should be running"
    child.kill(signal.SIGHUP)  # the terminal goes away while the shell runs
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "sleep 1000" in subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True).stdout:
        time.sleep(0.2)
    assert "sleep 1000" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert runc_containers(root) == []
    # the root is intact: a normal build afterwards works and the aborted step runs then
    built = wb(str(ctx), root=root)
    assert "RUN echo one" in built.stderr


FLASK = (f"FROM {BASE}\nWORKDIR /app\nCOPY requirements.txt .\n"
         "RUN --mount=type=bind,source=wheels,target=/wheels cat requirements.txt && ls /wheels\n")


def _flask_project(tmp_path: Path) -> Path:
    """A Flask-like project: WORKDIR /app, its requirements copied in, pip's wheels bind-mounted at /wheels."""
    ctx = _project(tmp_path, FLASK)
    (ctx / "requirements.txt").write_text("flask==3.0\n")
    (ctx / "wheels").mkdir()
    (ctx / "wheels" / "flask-3.0-py3-none-any.whl").write_text("wheel\n")
    return ctx


def test_ls_and_cat_start_at_the_step_workdir_and_see_its_mounts(tmp_path: Path, registry: str) -> None:
    ctx = _flask_project(tmp_path)
    child = _spawn("--root", str(tmp_path / "root"), "--break", "4", str(ctx), cwd=tmp_path)
    child.expect(r"Breakpoint before: \[[^\]]*4/4\] RUN --mount=type=bind")
    child.expect(PROMPT)
    child.sendline("ls")  # the step's working directory, /app
    child.expect(r"-rw-r--r--\s+0\s+0\s+11  requirements.txt")
    child.expect(PROMPT)
    child.sendline("cat requirements.txt")
    child.expect("flask==3.0")
    child.expect(PROMPT)
    child.sendline("ls /wheels")  # the bind mount, as the step's process sees it
    child.expect("flask-3.0-py3-none-any.whl")
    child.expect(PROMPT)
    child.sendline("ls /")
    child.expect("wheels/")
    child.expect(PROMPT)
    child.sendline("cat /wheels/flask-3.0-py3-none-any.whl")
    child.expect("wheel")
    child.expect(PROMPT)
    continue_to_the_end(child)


def test_after_the_build_cached_steps_diff_summary_and_breakpoints(tmp_path: Path, registry: str) -> None:
    ctx = _flask_project(tmp_path)
    root = tmp_path / "root"
    wb(str(ctx), root=root)  # every step is cached in the debugged build
    child = _spawn("--root", str(root), "--break", "4", str(ctx), cwd=tmp_path, PAGER="sed s/^/paged:/")
    child.expect(r"Breakpoint before: \[[^\]]*4/4\]")
    child.expect(PROMPT)
    child.sendline("continue")
    child.expect("build finished")
    child.expect("the build has ended")
    child.expect(PROMPT)
    child.sendline("steps")
    child.expect(r"2  cached  \[[^\]]*2/4\] WORKDIR /app")
    child.expect(PROMPT)
    child.sendline("ls / 2")  # a cached step, after the build
    child.expect("app/")
    child.expect(PROMPT)
    child.sendline("ls /app 'COPY requirements'")  # a step by its name
    child.expect("requirements.txt")
    child.expect(PROMPT)
    child.sendline("cat /app/requirements.txt 3/4")
    child.expect("flask==3.0")
    child.expect(PROMPT)
    child.sendline("diff 2 3")  # the summary, then the details through $PAGER
    child.expect(r"step 2 → step 3: 1 added \(11 B\), 0 changed, 0 removed")
    child.expect(r"paged:A /app/requirements.txt \(11 B\)")
    child.expect(PROMPT)
    child.sendline("break 3")
    child.expect("breakpoint 2 at line 3")
    child.expect(PROMPT)
    child.sendline("delete 1")
    child.expect("deleted breakpoint 1 at line 4")
    child.expect(PROMPT)
    child.sendline("breakpoints")
    child.expect("2: line 3")
    child.expect(PROMPT)
    child.sendline("clear breakpoints")
    child.expect("deleted breakpoint 2 at line 3")
    child.expect(PROMPT)
    child.sendline("breakpoints")
    child.expect("no breakpoints")
    child.expect(PROMPT)
    child.sendline("clear")  # the screen
    child.expect_exact("\x1b[2J")
    child.expect(PROMPT)
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
