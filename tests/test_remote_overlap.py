"""`build --addr` asks the daemon's version while the local frontend works: a Dockerfile error is told (and
recorded) while a daemon that does not answer is still being asked."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

from workbench.history.recorder import Recording
from workbench.progress.events import EventBus
from workbench.remote.address import parse_address
from workbench.remote.engine import RemoteEngine
from workbench.request import BuildFailure, BuildRequest


def test_a_dockerfile_error_does_not_wait_for_a_silent_daemon(tmp_path: Path) -> None:
    sock_path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen()
    held: list[socket.socket] = []
    release = threading.Event()

    def accept() -> None:  # takes the connection and never says a word (no HTTP/2 settings, no answer)
        while not release.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nFOO bar\n")
    engine = RemoteEngine(parse_address(f"unix://{sock_path}"), "", recorder=Recording.start)
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            engine.build(BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root"), EventBus())
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(10)  # the daemon's version is asked with a 20 s deadline: before, the build waited for it first
    try:
        assert not worker.is_alive(), "the build waited for the daemon before reading its Dockerfile"
        assert len(outcome) == 1 and isinstance(outcome[0], BuildFailure)
        assert "unknown instruction: FOO" in str(outcome[0])
        [record] = [p for p in (tmp_path / "root" / "history").iterdir() if p.is_dir()]
        meta = json.loads((record / "meta.json").read_text())
        result = json.loads((record / "result.json").read_text())
        assert meta["engine"] == f"buildkit at unix://{sock_path}"
        assert result["status"] == "error" and "unknown instruction: FOO" in result["error"]
    finally:
        release.set()
        listener.close()
        for conn in held:
            conn.close()
