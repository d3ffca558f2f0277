"""`workbench dap` with `args: ["--addr", ADDR]`: the build runs on a BuildKit daemon through its gateway
(buildkitd v0.20 and Docker 20.10's BuildKit): breakpoints on our graph's steps, `next`, the stopped step's
variables and files (the gateway's ReadDir), `evaluate` in a gateway container, break on error where the
daemon allows it, and nothing left running after a disconnect."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.test_dap_adapter import DapClient, _values
from tests.test_remote_build import buildkitd_addr
from workbench.dap.protocol import encode

pytestmark = pytest.mark.real

BASE = "localhost:5055/busybox"
EXECUTOR = "/tmp/bk/state/runc-overlayfs/executor"  # where buildkitd v0.20 keeps its containers' bundles


@pytest.fixture(params=["docker", "buildkitd"])
def daemon(request: pytest.FixtureRequest, registry: str) -> tuple[str, str]:
    if request.param == "docker":
        d: DockerDaemon = request.getfixturevalue("docker_daemon")
        return "docker", d.addr
    return "buildkitd", buildkitd_addr()


def _project(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text("hello from the context\n")
    return ctx / "Dockerfile"


def _launch(df: Path, root: Path, addr: str, **extra: Any) -> dict[str, Any]:
    return {"dockerfile": str(df), "args": ["--root", str(root), "--addr", addr], **extra}


def _scopes(c: DapClient, line: int) -> dict[str, int]:
    trace = c.request("stackTrace", {"threadId": 1})
    assert trace["success"], trace
    assert trace["body"]["stackFrames"][0]["line"] == line, trace
    resp = c.request("scopes", {"frameId": trace["body"]["stackFrames"][0]["id"]})
    assert resp["success"], resp
    return {s["name"]: s["variablesReference"] for s in resp["body"]["scopes"]}


def _evaluate(c: DapClient, expr: str) -> str:
    resp = c.request("evaluate", {"expression": expr, "context": "repl", "frameId": 1})
    assert resp["success"], resp
    return str(resp["body"]["result"])


def _end(c: DapClient, code: int) -> None:
    assert c.event("exited")["body"]["exitCode"] == code, c.outputs()
    c.event("terminated")
    assert c.request("disconnect")["success"]
    assert c.proc.wait(60) == 0


STEPS_DF = f"""FROM {BASE}
COPY hello.txt /data/hello.txt
ENV APP=demo
RUN echo made > /data/made.txt
RUN cat /data/made.txt # {{nonce}}
"""


def test_breakpoint_next_variables_files_and_evaluate(daemon: tuple[str, str], tmp_path: Path, root: Path) -> None:
    df = _project(tmp_path, STEPS_DF.replace("{nonce}", str(time.time_ns())))  # its log is not cached
    c = DapClient(tmp_path)
    try:
        bps = c.start(_launch(df, root, daemon[1]), [4])["body"]["breakpoints"]
        assert bps[0]["verified"] and bps[0]["line"] == 4
        stop = c.stopped()
        assert stop["reason"] == "breakpoint" and "RUN echo made" in stop["description"], stop
        scopes = _scopes(c, 4)
        assert list(scopes) == ["Step", "Environment", "Build args", "Mounts", "Filesystem"]
        step = _values(c, scopes["Step"])
        assert step["line"] == "4" and step["reason"] == "breakpoint", step
        assert _values(c, scopes["Environment"])["APP"] == "demo"
        root_dir = c.variables(scopes["Filesystem"])
        assert "data/" in root_dir and "bin/" in root_dir, root_dir
        data = c.variables(root_dir["data/"]["variablesReference"])
        assert list(data) == ["hello.txt"], data  # the step's input: made.txt is not there yet
        assert data["hello.txt"]["value"].startswith("-rw-r--r-- 0 0 23"), data
        assert data["hello.txt"]["evaluateName"] == "/data/hello.txt"
        assert _evaluate(c, "cat /data/hello.txt; echo $APP") == "hello from the context\ndemo\n"
        assert _evaluate(c, "echo oops >&2; exit 3") == "oops\n[exit code 3]"

        assert c.request("next")["success"]
        stop = c.stopped()
        assert stop["reason"] == "step" and "RUN cat /data/made.txt" in stop["description"], stop
        scopes = _scopes(c, 5)
        data = c.variables(c.variables(scopes["Filesystem"])["data/"]["variablesReference"])
        assert sorted(data) == ["hello.txt", "made.txt"], data
        assert _evaluate(c, "cat /data/made.txt") == "made\n"
        assert c.request("continue")["success"]
        _end(c, 0)
        assert "made" in c.outputs("stdout")  # the step's log, from the daemon's status
    finally:
        c.close()


FAIL_DF = f"""FROM {BASE}
RUN echo before > /before.txt
RUN echo left > /left.txt && exit 3
RUN echo never
"""


def test_break_on_error(daemon: tuple[str, str], tmp_path: Path, root: Path) -> None:
    df = _project(tmp_path, FAIL_DF)
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root, daemon[1]), [], filters=["error"])
        if daemon[0] == "docker":  # Docker 20.10's BuildKit does not name a failed step's mounts
            assert c.event("exited")["body"]["exitCode"] == 1
            assert "cannot stop at the failed step" in c.outputs("important"), c.outputs()
            assert "build failed:" in c.outputs("important")
            assert not [m for m in c.seen if m.get("event") == "stopped"]
            c.event("terminated")
            assert c.request("disconnect")["success"]
            assert c.proc.wait(60) == 0
            return
        stop = c.stopped()
        assert stop["reason"] == "exception" and "exit code: 3" in stop["text"], stop
        scopes = _scopes(c, 3)
        assert "exit code: 3" in _values(c, scopes["Step"])["error"]
        files = c.variables(scopes["Filesystem"])
        assert "left.txt" in files and "before.txt" in files, files
        assert _evaluate(c, "cat /left.txt /before.txt") == "left\nbefore\n"
        assert c.request("continue")["success"]
        _end(c, 1)
        assert "build failed:" in c.outputs("important")
    finally:
        c.close()


def _gateway_containers() -> set[str]:
    """buildkitd's running containers (its runc keeps them in runc's default root, its bundles under
    EXECUTOR)."""
    out = subprocess.run(["runc", "list", "--format", "json"], capture_output=True, text=True).stdout
    return {c["id"] for c in json.loads(out or "[]") or []
            if c["bundle"].startswith(EXECUTOR + "/") and c["status"] == "running"}


def _running(token: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", token], capture_output=True, text=True).stdout.split()


def test_disconnect_mid_build_cancels_and_leaves_no_container(daemon: tuple[str, str], tmp_path: Path,
                                                             root: Path) -> None:
    df = _project(tmp_path, STEPS_DF)
    token = f"wb-dap-{time.time_ns()}"
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root, daemon[1]), [5])
        c.stopped()
        before = _gateway_containers()
        # Docker 20.10's BuildKit (v0.8) leaves a released gateway container's process running: a short one there
        seconds = 600 if daemon[0] == "buildkitd" else 20
        seq = c.send("evaluate", {"expression": f"sleep {seconds}; echo {token}", "context": "repl"})
        mine: set[str] = set()
        if daemon[0] == "buildkitd":
            deadline = time.monotonic() + 60
            while not _running(token):  # the evaluation runs in a gateway container
                assert time.monotonic() < deadline, "the evaluation never started"
                time.sleep(0.2)
            mine = _gateway_containers() - before
            assert mine
        else:
            time.sleep(3)
        assert c.request("disconnect")["success"]
        assert c.proc.wait(60) == 0  # the solve canceled, the container released, the build thread joined
        answers = [m["body"]["result"] for m in c.seen if m.get("request_seq") == seq and m.get("success")]
        assert answers in ([], ["[exit code 137]"])  # killed with its container
        assert [m["body"]["exitCode"] for m in c.seen if m.get("event") == "exited"] == [1]  # aborted
        if daemon[0] == "docker":
            return
        deadline = time.monotonic() + 30
        while (left := mine & _gateway_containers()) or _running(token):
            assert time.monotonic() < deadline, f"left on the daemon: {left}, {_running(token)}"
            time.sleep(0.2)
    finally:
        c.close()


def test_frontend_is_refused_in_one_line(tmp_path: Path) -> None:
    df = _project(tmp_path, STEPS_DF)
    c = DapClient(tmp_path)
    try:
        assert c.request("initialize", {"adapterID": "workbench"})["success"]
        resp = c.request("launch", {"dockerfile": str(df), "args": ["--addr", "unix:///nowhere.sock", "--frontend",
                                                                     "dockerfile.v0"]})
        assert not resp["success"]
        assert resp["message"] == ("launch `args`: --frontend dockerfile.v0: breakpoints need workbench's own build "
                                   "graph (the daemon's frontend tells no steps to stop before): leave it out")
    finally:
        c.close()


def test_exec_in_the_editors_terminal(daemon: tuple[str, str], tmp_path: Path, root: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    df = _project(tmp_path, STEPS_DF)
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root, daemon[1]), [4], client={"supportsRunInTerminalRequest": True})
        assert c.stopped()["reason"] == "breakpoint"
        ev = c.request("evaluate", {"expression": "exec", "context": "repl"})
        assert ev["success"] and "runs in the terminal" in ev["body"]["result"], ev
        ask = c.wait(lambda m: m.get("type") == "request" and m.get("command") == "runInTerminal")
        args = ask["arguments"]["args"]
        term = pexpect.spawn(args[0], args[1:], encoding="utf-8", timeout=60, dimensions=(30, 100))
        c.write(encode({"seq": 1000, "type": "response", "request_seq": ask["seq"], "command": "runInTerminal",
                        "success": True, "body": {"processId": term.pid}}))
        term.expect("# ")
        term.sendline("stty size; cat /data/hello.txt; exit 7")
        term.expect("30 100")
        term.expect("hello from the context")
        term.expect(r"\[exit code 7\]")
        term.expect(pexpect.EOF)
        c.wait(lambda m: m.get("event") == "output" and "exit code 7" in m["body"]["output"])
        assert c.request("continue", {"threadId": 1})["success"]
        _end(c, 0)
    finally:
        c.close()


def test_stop_on_entry_and_pause_once_the_build_is_one_solve(daemon: tuple[str, str], tmp_path: Path,
                                                            root: Path) -> None:
    nonce = time.time_ns()
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo first-{nonce}\nRUN sleep 4 && echo slept-{nonce}\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root, daemon[1], stopOnEntry=True))
        stop = c.stopped()
        assert stop["reason"] == "entry" and f"FROM {BASE}" in stop["description"], stop
        assert c.request("continue", {"threadId": 1})["success"]
        c.wait(lambda m: m.get("event") == "output" and f"slept-{nonce}" in m["body"]["output"]
               and m["body"]["category"] == "console")  # the step started: its line printed
        paused = c.request("pause", {"threadId": 1})
        assert not paused["success"]
        assert paused["message"].startswith("the build runs on the daemon in one solve from here"), paused
        _end(c, 0)
        assert f"slept-{nonce}" in c.outputs("stdout")
    finally:
        c.close()
