"""Bad command-line values get one clear error line, never a hang or a silent no-op (issue 15, item 9).

`-f` naming a FIFO, `--cdi-spec-dir` naming a file, `--ssh` values buildx would refuse, and file names
with a newline or an escape character in `CACHE MISS` lines.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + list(args), capture_output=True, text=True, timeout=20,
                          env={**os.environ, **(env or {})})


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    return c


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines, proc.stdout
    return lines[-1]


@pytest.mark.parametrize("command", [["build", "--progress", "plain"], ["check"], ["inspect", "llb"]])
def test_dockerfile_that_is_a_fifo_is_refused(ctx: Path, tmp_path: Path, root: Path, command: list[str]) -> None:
    fifo = tmp_path / "Dockerfile.fifo"
    os.mkfifo(fifo)
    proc = _run(*command, "--root", str(root), "-f", str(fifo), str(ctx))  # used to wait for a writer forever
    assert proc.returncode == 1
    line = _error_line(proc)
    assert line.startswith("ERROR: ") and str(fifo) in line and "is a FIFO, not a regular file" in line, line


def test_inspect_ast_of_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "Dockerfile"
    os.mkfifo(fifo)
    proc = _run("inspect", "ast", str(fifo))
    assert proc.returncode == 1
    assert "is a FIFO, not a regular file" in _error_line(proc)


@pytest.mark.parametrize("command", [["devices"], ["build", "--progress", "plain"]])
def test_cdi_spec_dir_that_is_a_file(ctx: Path, root: Path, command: list[str]) -> None:
    spec = ctx / "spec.yaml"
    spec.write_text("cdiVersion: 0.6.0\n")
    extra = ["--root", str(root), str(ctx)] if command[0] == "build" else []
    proc = _run(*command, "--cdi-spec-dir", str(spec), *extra)
    assert proc.returncode == 2
    assert _error_line(proc) == f"workbench: error: --cdi-spec-dir {spec}: not a directory"


@pytest.fixture()
def agent_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    yield path
    s.close()


def test_ssh_values_are_validated(ctx: Path, root: Path, tmp_path: Path, agent_socket: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not checked here\n")
    other = tmp_path / "other.sock"
    os.mkfifo(other)
    cases = {
        "bad id": (f"a b={key}", "invalid id 'a b'"),
        "path in id": ("../x", "invalid id '../x'"),
        "missing path": (f"id={tmp_path}/nope", f"{tmp_path}/nope: No such file or directory"),
        "directory": (f"id={tmp_path}", f"{tmp_path} is neither an agent socket nor a key file"),
        "fifo": (f"id={other}", f"{other} is neither an agent socket nor a key file"),
        "two sockets": (f"id={agent_socket},{agent_socket}", "only one agent socket is allowed"),
        "socket and key": (f"id={agent_socket},{key}", "either one agent socket or key files, not both"),
        "no agent": ("id", "SSH_AUTH_SOCK is not set"),
    }
    for what, (value, message) in cases.items():
        proc = _run("build", "--progress", "plain", "--root", str(root), "--ssh", value, str(ctx),
                    env={"SSH_AUTH_SOCK": ""})
        assert proc.returncode == 2, what
        line = _error_line(proc)
        assert line.startswith(f"workbench: error: --ssh {value}: ") and message in line, (what, line)
    dup = _run("build", "--progress", "plain", "--root", str(root), "--ssh", f"id={key}", "--ssh", f"id={agent_socket}",
               str(ctx))
    assert dup.returncode == 2 and "invalid duplicate id 'id'" in _error_line(dup)


def test_good_ssh_values_still_build(ctx: Path, root: Path, tmp_path: Path, agent_socket: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("a key file\n")
    proc = wb(str(ctx), "--ssh", f"={agent_socket}", "--ssh", f"deploy.key_1-x={key}", "--ssh", f"other={key},{key}",
              root=root)  # an empty id is `default`
    assert proc.returncode == 0


def test_cache_miss_names_are_quoted(ctx: Path, root: Path) -> None:
    newline, escape = "new\nline", "esc\x1b[31mred"
    for name in (newline, escape):
        (ctx / name).write_text("one")
    wb(str(ctx), root=root)
    for name in (newline, escape):
        (ctx / name).write_text("two")
    proc = wb(str(ctx), root=root)
    [miss] = [line for line in proc.stderr.splitlines() if "CACHE MISS:" in line and "changed" in line]
    assert '"esc\\x1b[31mred" changed (' in miss and '"new\\nline" changed (' in miss, miss
    assert "\x1b" not in proc.stderr  # no raw escape sequence reaches the terminal
