"""DAP input and output that must never end or hang a session: values Python's JSON refuses, non-UTF-8
names, oversized bodies, a client that reads nothing, an attach program that lies; and step files listed
through no-follow directory fds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from workbench.dap import protocol, terminal
from workbench.dap.adapter import serve
from workbench.dap.protocol import MAX_BODY, Decoder, Malformed, Writer, encode
from workbench.debug import fsview
from workbench.results import ViewError


def _frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _request(seq: int, command: str) -> bytes:
    return _frame(json.dumps({"seq": seq, "type": "request", "command": command, "arguments": {}}).encode())


def test_a_huge_integer_deep_nesting_and_a_lone_surrogate_are_answered_and_the_session_goes_on() -> None:
    chunks = [_frame(b'{"seq":1,"type":"request","command":"x","arguments":{"n":' + b"9" * 5000 + b"}}"),
              _frame(b"[" * 100_000),
              _frame(b'{"seq":3,"type":"request","command":"\\ud800","arguments":{}}'),
              _request(4, "initialize")]
    written = bytearray()
    serve(lambda: chunks.pop(0) if chunks else b"", written.extend, engine=None)  # type: ignore[arg-type]
    out: list[Any] = Decoder(json.loads).feed(bytes(written))
    notes = [m["body"]["output"] for m in out if m.get("event") == "output"]
    assert any("digit" in n for n in notes) and any("nested too deeply" in n for n in notes), notes
    third = next(m for m in out if m.get("request_seq") == 3)
    assert not third["success"] and third["command"] == "\ud800"  # sent as the escape \ud800
    assert any(m.get("request_seq") == 4 and m["success"] for m in out), out


def test_a_non_utf8_file_name_is_encoded_escaped() -> None:
    name = os.fsdecode(b"caf\xe9-\xff")
    frame = encode({"type": "event", "event": "output", "body": {"output": name + " é"}})
    assert b"\\udce9" in frame and "é".encode() in frame
    [msg] = Decoder(json.loads).feed(frame)
    assert msg["body"]["output"] == name + " é"  # type: ignore[index]


def test_a_body_over_the_limit_is_refused_and_a_large_one_in_small_reads_is_whole() -> None:
    [bad] = Decoder().feed(b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert isinstance(bad, Malformed) and "limit" in bad.why
    assert MAX_BODY <= 4 * 1024 * 1024
    body = json.dumps({"seq": 1, "type": "request", "command": "x", "arguments": {"s": "y" * 3_000_000}}).encode()
    data, d, got = _frame(body) + _request(2, "z"), Decoder(), []
    for i in range(0, len(data), 4096):
        got += d.feed(data[i:i + 4096])
    assert [m["command"] for m in got] == ["x", "z"]  # type: ignore[index]
    assert len(got[0]["arguments"]["s"]) == 3_000_000  # type: ignore[index]


def test_a_sender_never_waits_on_a_client_that_reads_nothing() -> None:
    release = threading.Event()
    written: list[bytes] = []

    def stuck(data: bytes) -> None:
        release.wait()
        written.append(data)

    w = Writer(stuck)
    sender = threading.Thread(target=lambda: [w.output(f"line {i}\n") for i in range(3)])  # as the build thread
    sender.start()
    sender.join(30)
    stuck_before = sender.is_alive()
    release.set()
    sender.join()
    w.closed = True  # sends what is queued first
    assert not stuck_before
    assert [json.loads(f.split(b"\r\n\r\n", 1)[1])["body"]["output"] for f in written] == \
        ["line 0\n", "line 1\n", "line 2\n"]


def test_a_client_that_lets_output_pile_up_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_QUEUED", 10_000)
    release = threading.Event()
    w = Writer(lambda data: release.wait() and None)
    for _ in range(200):
        w.output("x" * 100)
    assert w.closed
    release.set()


def test_a_bounded_write_gives_up_on_a_stalled_reader() -> None:
    a, b = socket.socketpair()
    with a, b:
        write = protocol.bounded_write(a.fileno(), lambda view: a.send(view, socket.MSG_DONTWAIT), stall=0.2)
        with pytest.raises(TimeoutError, match="read nothing"):
            write(b"x" * (16 << 20))


@pytest.mark.parametrize("hello", [b'{"rows": -1, "cols": 80}\n', b'{"rows": 1e400, "cols": 2}\n',
                                   b'{"rows": 70000, "cols": "9"}\n', b"[[[[\n", b""])
def test_the_attach_programs_terminal_size_is_checked(hello: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminal, "HELLO_TIMEOUT", 0.2)
    a, b = socket.socketpair()
    with a, b:
        b.sendall(hello)  # b"": says nothing and stays connected
        assert terminal._hello(a) == (24, 80)
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b'{"rows": 50, "cols": 132}\n')
        assert terminal._hello(a) == (50, 132)


def test_the_shell_socket_goes_in_the_roots_tmp_and_stale_folders_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    if not (base.is_dir() and os.access(base, os.W_OK)) or os.environ.get("XDG_RUNTIME_DIR"):
        pytest.skip("the fallback folder is $XDG_RUNTIME_DIR here")
    stale = Path(f"/tmp/workbench-dap-{dead.pid}-testsweep")
    stale.mkdir()
    (stale / "shell.sock").write_text("")
    server = terminal.TerminalServer()
    try:
        assert not stale.exists()
        assert server.dir.name.startswith(f"workbench-dap-{os.getpid()}-")
    finally:
        server.close()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = terminal.TerminalServer(tmp)
    try:
        assert server.dir.parent == tmp and server.dir.name.startswith(f"{os.getpid()}-dap-")
        assert server.path.is_socket() and (server.path.stat().st_mode & 0o777) == 0o600
    finally:
        server.close()
    assert not server.dir.exists()


def _swap_after_resolve(monkeypatch: pytest.MonkeyPatch, victim: Path, outside: Path) -> None:
    """Make `victim` a symlink to `outside` right after fsview has resolved its path (the race, made sure)."""
    real = fsview.resolve_in_root

    def racing(root: Path, path: str, follow_final: bool = True) -> Path:
        resolved = real(root, path, follow_final)
        if victim.is_dir() and not victim.is_symlink():
            os.rename(victim, victim.with_name("was"))
        elif victim.exists() and not victim.is_symlink():
            victim.unlink()
        if not victim.is_symlink():
            victim.symlink_to(outside)
        return resolved

    monkeypatch.setattr(fsview, "resolve_in_root", racing)


def test_a_directory_swapped_for_a_symlink_is_not_listed_through(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    (root / "d" / "inside").write_text("x")
    outside.mkdir()
    (outside / "host-secret").write_text("s")
    assert [e.name for e in fsview.entries(root, "d")] == ["inside"]
    _swap_after_resolve(monkeypatch, root / "d", outside)
    try:
        names = [e.name for e in fsview.entries(root, "d")]
    except ViewError:
        names = []
    assert "host-secret" not in names


def test_a_file_swapped_for_a_symlink_is_not_read_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = tmp_path / "root", tmp_path / "host-secret"
    root.mkdir()
    (root / "f").write_text("mine")
    outside.write_text("secret")
    assert fsview.read_file(root, "f") == b"mine"
    _swap_after_resolve(monkeypatch, root / "f", outside)
    with pytest.raises(ViewError, match="not a regular file"):
        fsview.read_file(root, "f")


def _signal_thread(pid: int, tid: int, sig: int) -> None:
    """tgkill: a signal for one thread of another process."""
    import ctypes
    import platform

    number = {"x86_64": 234, "aarch64": 131}.get(platform.machine())
    if number is None:
        pytest.skip(f"tgkill's syscall number is not known here ({platform.machine()})")
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(number, pid, tid, sig) == 0, os.strerror(ctypes.get_errno())


def test_sigterm_given_to_another_thread_ends_the_stdio_adapter(tmp_path: Path) -> None:
    """The kernel may hand a SIGTERM to any thread (the writer's) while the main thread is blocked reading the
    client, and Python runs handlers only in the main thread: the adapter must still end (it waits on a
    wake-up fd beside stdin). The signal is sent to a thread other than the main one on purpose."""
    import signal
    import time

    from tests.conftest import WORKBENCH

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    p = subprocess.Popen([*WORKBENCH, "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=dict(os.environ, WORKBENCH_SERVER="0"))
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(encode({"seq": 1, "type": "request", "command": "initialize", "arguments": {}}))
        p.stdin.flush()
        seen = b""
        while b'"initialized"' not in seen:
            chunk = p.stdout.read1(65536)
            assert chunk, seen
            seen += chunk
        time.sleep(0.5)  # the main thread is back in its read
        others = [int(t) for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
        assert others, "the adapter has a writer thread"
        _signal_thread(p.pid, others[0], signal.SIGTERM)
        assert p.wait(10) == 143
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
