"""The build server's socket folder: a server never serves from, nor creates files through, a folder that is
not ours alone, even one made after the client checked it (another local user racing the server's start)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from workbench import client

OTHER_UID = 12345  # no such user: a folder chowned to it stands for another local user's

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a folder of another user needs root")


def _serve(sock: Path) -> subprocess.CompletedProcess[str]:
    """Run a server the way the client starts one; it returns at once when it refuses the folder."""
    return subprocess.run([sys.executable, "-P", "-m", "workbench.server", "--socket", str(sock)], cwd="/",
                          capture_output=True, text=True, timeout=60)


def _status(sock: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, WORKBENCH_SERVER_SOCKET=str(sock))
    return subprocess.run(WORKBENCH + ["server", "status"], env=env, capture_output=True, text=True, timeout=30)


@as_root
def test_no_server_in_a_folder_of_another_user(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, OTHER_UID, OTHER_UID)
    target = tmp_path / "victim"
    (folder / "server.sock.lock").symlink_to(target)  # what the other user left for our server
    assert _serve(folder / "server.sock").returncode == 1
    assert sorted(p.name for p in folder.iterdir()) == ["server.sock.lock"]
    assert not target.exists() and not os.path.lexists(folder / "server.sock")


def test_no_server_in_a_world_writable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    assert _serve(folder / "server.sock").returncode == 1
    assert list(folder.iterdir()) == []


def test_lock_link_in_our_folder_is_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "ours"
    folder.mkdir(mode=0o700)
    target = tmp_path / "victim"
    (folder / "server.sock.lock").symlink_to(target)
    assert _serve(folder / "server.sock").returncode == 1
    assert not target.exists() and not os.path.lexists(folder / "server.sock")


@as_root
def test_status_refuses_an_unsafe_folder(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, OTHER_UID, OTHER_UID)
    proc = _status(folder / "server.sock")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"workbench: error: the build server's folder {folder} is not a 0700 directory of uid 0: not using it"]


@as_root
def test_build_runs_in_process_beside_an_unsafe_folder(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, OTHER_UID, OTHER_UID)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    out = tmp_path / "out"
    env = dict(os.environ, WORKBENCH_SERVER_SOCKET=str(folder / "server.sock"))
    env.pop("WORKBENCH_SERVER", None)
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(tmp_path / "root"), "--progress", "plain",
                                       "--output", f"type=local,dest={out}", str(ctx)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "a.txt").read_text() == "alpha\n"
    assert list(folder.iterdir()) == []


def test_server_makes_a_private_folder_and_socket(tmp_path: Path) -> None:
    sock = tmp_path / "fresh" / "server.sock"
    server = subprocess.Popen([sys.executable, "-P", "-m", "workbench.server", "--socket", str(sock)], cwd="/",
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while _status(sock).returncode != 0:
            assert time.monotonic() < deadline and server.poll() is None, "the build server did not start"
            time.sleep(0.1)
        assert stat.filemode(os.lstat(sock.parent).st_mode) == "drwx------"
        assert stat.filemode(os.lstat(sock).st_mode) == "srw-------"
        assert stat.filemode(os.lstat(f"{sock}.lock").st_mode) == "-rw-------"
    finally:
        env = dict(os.environ, WORKBENCH_SERVER_SOCKET=str(sock))
        subprocess.run(WORKBENCH + ["server", "stop"], env=env, capture_output=True, timeout=30)
        server.wait(timeout=30)


@as_root
def test_root_ignores_a_runtime_dir_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_SERVER_SOCKET", raising=False)
    theirs = tmp_path / "run-user"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(theirs))  # sudo -E keeps the user's
    assert client.socket_path() == "/tmp/workbench-0/server.sock"
    ours = tmp_path / "run-root"
    ours.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(ours))
    assert client.socket_path() == f"{ours}/workbench/server.sock"
