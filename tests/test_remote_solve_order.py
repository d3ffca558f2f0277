"""The order of one Solve's calls (workbench.remote.solve.run_solve), over a channel that records them: the Solve
goes first, so the daemon starts on the graph while the session opens (it waits for the session, as for
buildctl's); the build's deferred work runs once the Solve is on its way; and a session that cannot open calls
the Solve off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workbench.remote.address import parse_address
from workbench.remote.proto import control_pb2 as pb
from workbench.remote.session.pipe import SESSION_METHOD, SessionHeaderError
from workbench.remote.solve import SERVICE, SolvePlan, run_solve


class _Call:
    """A started call: its name in the log, canceled or not; a stream that ends at once."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name, self.canceled = log, name, False
        log.append(name)

    def cancel(self) -> bool:
        self.canceled = True
        return True

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def result(self, timeout: float | None = None) -> Any:  # the Solve: answered at once
        return pb.SolveResponse(ExporterResponse={"containerimage.digest": "sha256:" + "1" * 64})


class _Channel:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.calls: dict[str, _Call] = {}
        self.solve_request: Any = None

    def _start(self, name: str) -> _Call:
        call = self.calls[name] = _Call(self.log, name)
        return call

    def unary_unary(self, method: str, **_: Any) -> Any:
        assert method == SERVICE + "Solve"
        channel = self

        class Stub:
            def future(self, request: Any) -> _Call:
                channel.solve_request = request
                return channel._start("Solve")

        return Stub()

    def unary_stream(self, method: str, **_: Any) -> Any:
        assert method == SERVICE + "Status"
        return lambda request, **kw: self._start("Status")

    def stream_stream(self, method: str, **_: Any) -> Any:
        assert method == SESSION_METHOD
        return lambda requests, metadata=(): self._start("Session")


class _Control:
    def __init__(self) -> None:
        self.address = parse_address("unix:///nowhere/buildkitd.sock")
        self.channel = type("Channel", (), {"grpc": _Channel()})()


def _plan(tmp_path: Path) -> SolvePlan:
    return SolvePlan(frontend="", definition=pb.SolveRequest().Definition.SerializeToString(),
                     dirs={"context": tmp_path})


def test_the_solve_goes_before_the_session(tmp_path: Path) -> None:
    control = _Control()
    channel = control.channel.grpc
    response = run_solve(control, _plan(tmp_path), lambda status: None, threading.Event(), shared="k" * 32)
    assert response == {"containerimage.digest": "sha256:" + "1" * 64}
    assert channel.log[0] == "Solve" and sorted(channel.log[1:]) == ["Session", "Status"], channel.log
    assert channel.solve_request.Session  # it names the session that opens after it
    assert not channel.calls["Solve"].canceled


def test_deferred_work_runs_once_every_call_has_started(tmp_path: Path) -> None:
    control = _Control()
    channel = control.channel.grpc
    seen: list[list[str]] = []
    run_solve(control, _plan(tmp_path), lambda status: None, shared="k" * 32, sent=lambda: seen.append(channel.log[:]))
    assert seen == [channel.log] and len(channel.log) == 3


def test_a_session_that_cannot_open_calls_the_solve_off(tmp_path: Path) -> None:
    control = _Control()
    channel = control.channel.grpc
    sent: list[bool] = []
    with pytest.raises(SessionHeaderError):  # a shared key no header can carry: the session never opens
        run_solve(control, _plan(tmp_path), lambda status: None, shared="bad\nkey", sent=lambda: sent.append(True))
    assert channel.log == ["Solve", "Status"]
    assert channel.calls["Solve"].canceled and channel.calls["Status"].canceled
    assert not sent


def test_the_record_keeps_the_graph_when_the_daemon_is_unreachable(tmp_path: Path, root: Path) -> None:
    """The converted graph is written while the daemon solves; a build that fails on the way (no daemon
    listens) still has it in its record, beside the error."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    env = {k: v for k, v in os.environ.items() if k != "BUILDKIT_HOST"}
    p = subprocess.run([sys.executable, "-m", "workbench.cli", "build", "--root", str(root), "--addr",
                        f"unix://{tmp_path}/nothing.sock", "--progress", "plain", str(ctx)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "nothing.sock" in p.stderr
    [record] = list((root / "history").iterdir())
    llb = [json.loads(line) for line in (record / "llb.jsonl").read_text().splitlines()]
    assert any("COPY a.txt /a.txt" in json.dumps(v) for v in llb), llb
    result = json.loads((record / "result.json").read_text())
    assert result["status"] == "error", result
