"""`workbench dap` driven over stdio (and TCP) by a small DAP client, on real builds (runc, the local registry):
stops at breakpoints with the step's variables and files, `next` across stages, break on error, `evaluate`,
cache honesty, and nothing left mounted or running after a disconnect or a vanished client."""

from __future__ import annotations

import json
import os
import pwd
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORKBENCH, runc_containers
from workbench.dap.protocol import Decoder, encode

pytestmark = pytest.mark.real

BASE = "localhost:5055/busybox"
ENV = dict(os.environ, WORKBENCH_SERVER="0")


class DapClient:
    """`workbench dap` on stdio, or (`sock`) a connection to `workbench dap --listen`."""

    def __init__(self, cwd: Path | None = None, sock: socket.socket | None = None, argv: list[str] | None = None,
                 **env: str) -> None:
        self.sock = sock
        self.proc = subprocess.Popen(argv or [*WORKBENCH, "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd, env=dict(ENV, **env)) if sock is None else None
        self.seq = 0
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.raw_out = b""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        decoder = Decoder(json.loads)
        while True:
            try:
                chunk = self.sock.recv(65536) if self.sock else self.proc.stdout.read1(65536)  # type: ignore
            except OSError:
                return
            if not chunk:
                return
            self.raw_out += chunk
            for msg in decoder.feed(chunk):
                self.messages.put(msg)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        if self.sock is not None:
            self.sock.sendall(data)
            return
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, command: str, arguments: dict[str, Any] | None = None) -> int:
        self.seq += 1
        msg: dict[str, Any] = {"seq": self.seq, "type": "request", "command": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self.write(encode(msg))
        return self.seq

    def _next(self, timeout: float) -> dict[str, Any]:
        msg = self.messages.get(timeout=timeout)
        self.seen.append(msg)
        return msg

    def wait(self, pred: Any, timeout: float = 120) -> dict[str, Any]:
        """The first message (from now, or already seen and not yet taken) for which `pred` holds."""
        end = time.monotonic() + timeout
        for msg in self.seen:
            if not msg.get("_taken") and pred(msg):
                msg["_taken"] = True
                return msg
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; seen: {json.dumps(self.seen[-20:])[:4000]}")
            try:
                msg = self._next(left)
            except queue.Empty:
                continue
            if pred(msg):
                msg["_taken"] = True
                return msg

    def request(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
        seq = self.send(command, arguments)
        return self.wait(lambda m: m.get("type") == "response" and m.get("request_seq") == seq, timeout)

    def event(self, name: str, timeout: float = 180) -> dict[str, Any]:
        return self.wait(lambda m: m.get("type") == "event" and m.get("event") == name, timeout)

    def outputs(self, category: str | None = None) -> str:
        return "".join(m["body"]["output"] for m in self.seen if m.get("event") == "output"
                       and (category is None or m["body"]["category"] == category))

    def start(self, launch: dict[str, Any], lines: list[int] | None = None, filters: list[str] | None = None,
              client: dict[str, Any] | None = None) -> dict[str, Any]:
        """initialize, launch, breakpoints, configurationDone; returns the setBreakpoints response."""
        init = self.request("initialize", {"adapterID": "workbench", **(client or {})})
        assert init["success"], init
        self.event("initialized")
        launched = self.request("launch", launch)
        assert launched["success"], launched
        bps = self.request("setBreakpoints", {"source": {"path": launch["dockerfile"]},
                                              "breakpoints": [{"line": n} for n in lines or []]})
        if filters is not None:
            self.request("setExceptionBreakpoints", {"filters": filters})
        assert self.request("configurationDone")["success"]
        return bps

    def stopped(self, timeout: float = 180) -> dict[str, Any]:
        return self.event("stopped", timeout)["body"]

    def variables(self, ref: int, **kw: Any) -> dict[str, str]:
        resp = self.request("variables", {"variablesReference": ref, **kw})
        assert resp["success"], resp
        return {v["name"]: v for v in resp["body"]["variables"]}

    def scopes(self) -> dict[str, int]:
        trace = self.request("stackTrace", {"threadId": 1})
        assert trace["success"], trace
        frame = trace["body"]["stackFrames"][0]
        resp = self.request("scopes", {"frameId": frame["id"]})
        return {s["name"]: s["variablesReference"] for s in resp["body"]["scopes"]}

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # a FIN now, though our reader thread is in recv()
            except OSError:
                pass
            self.sock.close()
        elif self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


def _project(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx / "Dockerfile"


def _launch(df: Path, root: Path, *args: str, **extra: Any) -> dict[str, Any]:
    return {"dockerfile": str(df), "args": ["--root", str(root), *args], **extra}


def _end(c: DapClient, code: int = 0) -> None:
    assert c.event("exited")["body"]["exitCode"] == code, c.outputs()
    c.event("terminated")
    assert c.request("disconnect")["success"]
    assert c.proc.wait(60) == 0


def _values(c: DapClient, ref: int) -> dict[str, str]:
    return {k: v["value"] for k, v in c.variables(ref).items()}


def _nothing_left(root: Path, marker: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        mounted = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]
        left = runc_containers(root)
        running = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
        if not (mounted or left or running):
            return
        assert time.monotonic() < deadline, f"left behind: mounts {mounted}, containers {left}, processes {running}"
        time.sleep(0.2)


BREAK_DF = f"""FROM {BASE}
# set up
ARG GREETING=hello
ENV APP_HOME=/app
RUN mkdir -p /app/sub && echo "$GREETING" > /app/sub/greeting && ln -s /etc/passwd /app/link
RUN --mount=type=cache,target=/cache \\
    cat /app/sub/greeting
RUN echo done
"""


def test_breakpoint_stop_line_variables_lazy_files_and_evaluate(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, BREAK_DF)
    c = DapClient(tmp_path)
    try:
        bps = c.start(_launch(df, root, "--build-arg", "GREETING=bonjour"), [2, 7])["body"]["breakpoints"]
        assert bps[0] == {"verified": False, "line": 2, "id": 1, "message": "no build step at line 2"}
        assert bps[1]["verified"] and bps[1]["line"] == 6  # a continuation line: its instruction's first line
        stop = c.stopped()
        assert stop["reason"] == "breakpoint" and stop["threadId"] == 1, stop
        frames = c.request("stackTrace", {"threadId": 1})["body"]["stackFrames"]
        assert frames[0]["line"] == 6 and frames[0]["source"]["path"] == str(df), frames
        assert "3/4] RUN --mount=type=cache,target=/cache" in frames[0]["name"], frames
        assert [f["line"] for f in frames[1:]] == [5, 1], frames  # the steps that lead to it, nearest first
        sc = c.scopes()
        assert list(sc) == ["Step", "Environment", "Build args", "Mounts", "Filesystem"]
        step = _values(c, sc["Step"])
        assert step["line"] == "6" and step["reason"] == "breakpoint" and "cat /app/sub/greeting" in step["command"]
        assert step["workdir"] == "/" and step["user"] == "root" and step["platform"] == "linux/amd64", step
        assert _values(c, sc["Environment"])["APP_HOME"] == "/app"
        assert _values(c, sc["Build args"]) == {"GREETING": "bonjour"}
        assert _values(c, sc["Mounts"]) == {"/cache": "type=cache"}
        top = c.variables(sc["Filesystem"])
        assert {"app/", "bin/", "cache/", "etc/"} <= set(top), list(top)
        app = c.variables(top["app/"]["variablesReference"])  # listed only now, when expanded
        assert set(app) == {"sub/", "link"}, list(app)
        assert app["link"]["value"].endswith("-> /etc/passwd") and app["link"]["variablesReference"] == 0
        sub = c.variables(app["sub/"]["variablesReference"])
        assert sub["greeting"]["value"].split()[1:] == ["0", "0", "8"], sub  # mode uid gid size
        paged = c.variables(top["bin/"]["variablesReference"], start=1, count=2)
        assert len(paged) == 2
        ev = c.request("evaluate", {"expression": "cat /app/sub/greeting; echo oops >&2; exit 3", "context": "repl"})
        assert ev["success"] and ev["body"]["result"] == "bonjour\noops\n[exit code 3]", ev
        c.request("continue", {"threadId": 1})
        _end(c)
        assert "bonjour" in c.outputs("stdout") and "3/4] RUN --mount=type=cache" in c.outputs("console")
        gone = c.seen[-1]
        assert gone["command"] == "disconnect"
    finally:
        c.close()


MULTI_DF = f"""FROM {BASE} AS build
RUN echo one > /one
RUN echo two > /two

FROM {BASE}
COPY --from=build /one /one
RUN cat /one
"""


def test_next_goes_through_a_multi_stage_build_step_by_step(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, MULTI_DF)
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root, stopOnEntry=True))
        lines, reasons = [], []
        while True:
            stop = c.wait(lambda m: m.get("event") in ("stopped", "exited"), 180)
            if stop["event"] == "exited":
                assert stop["body"]["exitCode"] == 0, c.outputs()
                break
            reasons.append(stop["body"]["reason"])
            lines.append(c.request("stackTrace", {"threadId": 1})["body"]["stackFrames"][0]["line"])
            assert c.request("next", {"threadId": 1})["success"]
        assert reasons[0] == "entry" and set(reasons[1:]) == {"step"}, reasons
        assert 2 in lines and 3 in lines and 6 in lines and 7 in lines, lines
        assert lines.index(2) < lines.index(3) and lines.index(6) < lines.index(7), lines
        c.event("terminated")
        assert c.request("disconnect")["success"]
    finally:
        c.close()


def test_break_on_error_shows_the_failed_steps_files(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo partial > /left-behind && false\nRUN echo never\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), filters=["error"])
        stop = c.stopped()
        assert stop["reason"] == "exception" and "exit code" in stop["text"], stop
        assert c.request("stackTrace", {"threadId": 1})["body"]["stackFrames"][0]["line"] == 2
        sc = c.scopes()
        assert "exit code" in _values(c, sc["Step"])["error"]
        files = c.variables(sc["Filesystem"])
        assert "left-behind" in files, list(files)
        ev = c.request("evaluate", {"expression": "cat /left-behind", "context": "repl"})
        assert ev["body"]["result"] == "partial\n", ev
        info = c.request("exceptionInfo", {"threadId": 1})
        assert info["success"] and "exit code" in info["body"]["description"]
        c.request("continue", {"threadId": 1})
        _end(c, 1)
        assert "build failed:" in c.outputs("important")
    finally:
        c.close()


def test_errors_do_not_stop_without_the_error_filter(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN false\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), filters=[])
        ended = c.wait(lambda m: m.get("event") in ("stopped", "exited"))
        assert ended["event"] == "exited" and ended["body"]["exitCode"] == 1, ended
    finally:
        c.close()


def test_a_breakpoint_on_a_cached_step_stops_and_says_it_runs_again(tmp_path: Path, registry: str,
                                                                      root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo cached > /c\nRUN echo after\n")
    build = subprocess.run([*WORKBENCH, "build", "--root", str(root), str(df.parent)], capture_output=True,
                           text=True, timeout=300, env=ENV)
    assert build.returncode == 0, build.stderr
    c = DapClient(tmp_path)
    try:
        assert c.start(_launch(df, root), [2])["body"]["breakpoints"][0]["verified"]
        assert c.stopped()["reason"] == "breakpoint"
        assert "step [2/3] RUN echo cached > /c runs again to stop at the breakpoint (it was cached)" \
            in c.outputs("important"), c.outputs()
        c.request("continue", {"threadId": 1})
        _end(c)
    finally:
        c.close()


@pytest.mark.parametrize("how", ["disconnect", "eof", "sigterm"])
def test_leaving_in_the_middle_leaves_nothing_mounted_or_running(tmp_path: Path, registry: str, root: Path,
                                                                 how: str) -> None:
    marker = f"sleep 4{os.getpid() % 1000}{len(how)}7"
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one\nRUN echo two\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), [3])
        assert c.stopped()["reason"] == "breakpoint"
        _running(c, marker)
        assert any(str(root) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
        if how == "disconnect":
            assert c.request("disconnect", {"terminateDebuggee": True}, timeout=60)["success"]
        elif how == "eof":
            assert c.proc.stdin is not None
            c.proc.stdin.close()
        else:
            c.proc.terminate()
        assert c.proc.wait(60) == (143 if how == "sigterm" else 0)
        _nothing_left(root, marker)
    finally:
        c.close()


def _running(c: DapClient, marker: str) -> None:
    """Evaluate `marker` (a sleep) and wait until it runs: the client leaves while it does."""
    c.send("evaluate", {"expression": marker, "context": "repl"})
    deadline = time.monotonic() + 30
    while not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout:
        assert time.monotonic() < deadline, "the evaluated command did not start"
        time.sleep(0.1)


def test_launch_errors_are_one_line(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN true\n")
    c = DapClient(tmp_path)
    try:
        c.request("initialize", {"adapterID": "workbench"})
        bad = c.request("launch", _launch(df, root, "--bogus"))
        assert not bad["success"] and "unrecognized arguments: --bogus" in bad["message"], bad
        remote = c.request("launch", _launch(df, root, "--addr", "ftp://x"))
        assert not remote["success"] and remote["message"].startswith("launch `args`: --addr 'ftp://x': not an "
                                                                      "address") and "\n" not in remote["message"]
        missing = c.request("launch", {"dockerfile": str(tmp_path / "nope"), "args": ["--root", str(root)]})
        assert not missing["success"] and "no such file" in missing["message"]
        idle = c.request("evaluate", {"expression": "ls", "context": "repl"})
        assert not idle["success"] and idle["message"] == "the build is not stopped at a step"
        assert c.request("disconnect")["success"]
        assert c.proc.wait(30) == 0
    finally:
        c.close()


def _listen(tmp_path: Path, address: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*WORKBENCH, "dap", "--listen", address], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=ENV)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("workbench dap: listening on "), line
    return proc, line.split()[-1]


def test_listen_refuses_a_host_that_is_not_loopback(tmp_path: Path) -> None:
    run = subprocess.run([*WORKBENCH, "dap", "--listen", "0.0.0.0:0"], capture_output=True, text=True,
                         timeout=60, env=ENV)
    assert run.returncode == 2 and "only a loopback address is accepted" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


CLIENT = """
import json, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host.strip("[]"), int(port)), timeout=20)
body = json.dumps({"seq": 1, "type": "request", "command": "initialize", "arguments": {}}).encode()
s.sendall(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
        if b"initialized" in data:
            break
except ConnectionResetError:
    pass  # closed unanswered
print("answered" if b'"command":"initialize"' in data else "closed")
"""


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:0"])
def test_listen_serves_its_own_user_and_refuses_a_peer_of_another_uid(tmp_path: Path, address: str) -> None:
    if os.geteuid() != 0 or subprocess.run(["id", "wbtest"], capture_output=True).returncode != 0:
        pytest.skip("needs root and the user wbtest")
    if address.startswith("[") and not socket.has_ipv6:
        pytest.skip("no IPv6")
    proc, bound = _listen(tmp_path, address)
    try:
        mine = subprocess.run([sys.executable, "-c", CLIENT, bound], capture_output=True, text=True, timeout=60)
        assert mine.stdout.strip() == "answered", mine.stderr
        theirs = subprocess.run(["setpriv", "--reuid", "wbtest", "--regid", "wbtest", "--clear-groups",
                                 "/usr/bin/python3", "-c", CLIENT, bound], capture_output=True, text=True,
                                timeout=60, cwd="/")
        assert theirs.stdout.strip() == "closed", theirs.stdout + theirs.stderr
        assert proc.stderr is not None
        refused = proc.stderr.readline()
        assert "refused a connection" in refused and f"uid {pwd.getpwnam('wbtest').pw_uid}" in refused, refused
        again = subprocess.run([sys.executable, "-c", CLIENT, bound], capture_output=True, text=True, timeout=60)
        assert again.stdout.strip() == "answered"  # still listening
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def short_root() -> Any:
    """A state root with a short path, so that a socket under its tmp fits in a unix socket's 107 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="wbd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_exec_opens_a_shell_in_the_step_through_run_in_terminal(tmp_path: Path, registry: str,
                                                                 short_root: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    root = short_root
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one > /one\nRUN echo two\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), [3], client={"supportsRunInTerminalRequest": True})
        assert c.stopped()["reason"] == "breakpoint"
        ev = c.request("evaluate", {"expression": "exec", "context": "repl"})
        assert ev["success"] and "runs in the terminal" in ev["body"]["result"], ev
        ask = c.wait(lambda m: m.get("type") == "request" and m.get("command") == "runInTerminal")
        args = ask["arguments"]["args"]
        sock = Path(args[-1])
        assert oct(sock.stat().st_mode & 0o777) == "0o600" and oct(sock.parent.stat().st_mode & 0o777) == "0o700"
        if len(str(root / "tmp")) < 60:  # else the socket's path would pass 107 bytes: /tmp/workbench-dap-PID-…
            assert sock.parent.parent == root / "tmp"  # the reaper sweeps it if the adapter is killed
        term = pexpect.spawn(args[0], args[1:], encoding="utf-8", timeout=60, dimensions=(30, 100))
        c.write(encode({"seq": 1000, "type": "response", "request_seq": ask["seq"], "command": "runInTerminal",
                        "success": True, "body": {"processId": term.pid}}))
        term.expect("# ")
        term.sendline("stty size; cat /one; exit 7")
        term.expect("30 100")
        term.expect("one")
        term.expect(r"\[exit code 7\]")
        term.expect(pexpect.EOF)
        c.wait(lambda m: m.get("event") == "output" and "exit code 7" in m["body"]["output"])
        assert not sock.parent.exists()
        c.request("continue", {"threadId": 1})
        _end(c)
    finally:
        c.close()


def test_a_copy_step_shows_the_stages_env_workdir_and_user(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nENV FOO=bar\nWORKDIR /w\nUSER nobody\nCOPY Dockerfile /w/df\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root, "--no-cache"), [5])
        assert c.stopped()["reason"] == "breakpoint"
        scopes = c.scopes()
        assert _values(c, scopes["Environment"])["FOO"] == "bar"
        step = _values(c, scopes["Step"])
        assert (step["workdir"], step["user"]) == ("/w", "nobody")
        c.request("continue", {"threadId": 1})
        _end(c)
    finally:
        c.close()


def test_exec_without_a_terminal_capable_client_is_an_error(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), [2])
        c.stopped()
        ev = c.request("evaluate", {"expression": "exec sh", "context": "repl"})
        assert not ev["success"] and "cannot open a terminal" in ev["message"], ev
        c.request("continue", {"threadId": 1})
        _end(c)
    finally:
        c.close()


def test_secrets_are_masked_and_big_directories_capped(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN mkdir /many && cd /many && for i in $(seq 1005); do touch f$i; done\n"
                            "RUN --mount=type=secret,id=tok,target=/run/secrets/tok cat /run/secrets/tok\n")
    c = DapClient(tmp_path, TOK="s3cr3t-value-42")
    try:
        c.start(_launch(df, root, "--secret", "id=tok,env=TOK"), [3])
        c.stopped()
        sc = c.scopes()
        assert _values(c, sc["Mounts"]) == {"/run/secrets/tok": "type=secret"}
        ev = c.request("evaluate", {"expression": "cat /run/secrets/tok; echo", "context": "repl"})
        assert ev["body"]["result"] == "****\n", ev
        top = c.variables(sc["Filesystem"])
        capped = c.variables(top["many/"]["variablesReference"])
        assert len(capped) == 1001 and "5 more entries not shown" in capped["…"]["value"]
        tail = c.variables(top["many/"]["variablesReference"], start=1000, count=10)
        assert len(tail) == 5 and "…" not in tail
        frames = c.request("stackTrace", {"threadId": 1})["body"]["stackFrames"]
        below = c.request("scopes", {"frameId": frames[1]["id"]})["body"]["scopes"]
        assert [s["name"] for s in below] == ["Step"]
        assert _values(c, below[0]["variablesReference"])["line"] == "2"
        c.request("continue", {"threadId": 1})
        _end(c)
        assert "s3cr3t-value-42" not in c.raw_out.decode(), "a secret reached the client"
        assert "****" in c.outputs("stdout")
    finally:
        c.close()


def test_pause_stops_before_the_next_step_that_runs(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one\nRUN sleep 3\nRUN echo three\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), [3])
        assert c.stopped()["reason"] == "breakpoint"
        c.request("continue", {"threadId": 1})
        assert c.request("pause", {"threadId": 1})["success"]  # while `sleep 3` runs
        stop = c.stopped()
        assert stop["reason"] == "pause", stop
        assert c.request("stackTrace", {"threadId": 1})["body"]["stackFrames"][0]["line"] == 4
        c.request("continue", {"threadId": 1})
        _end(c)
    finally:
        c.close()


def test_a_tcp_client_that_vanishes_at_a_pause_leaves_nothing_and_the_server_goes_on(
        tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one\nRUN echo two\n")
    proc, bound = _listen(tmp_path, "127.0.0.1:0")
    host, port = bound.rsplit(":", 1)
    try:
        c = DapClient(sock=socket.create_connection((host, int(port)), timeout=120))
        c.start(_launch(df, root), [3])
        assert c.stopped()["reason"] == "breakpoint"
        marker = f"sleep 5{os.getpid() % 1000}3"
        _running(c, marker)
        assert runc_containers(root) and any(str(root) in line for line in
                                             Path("/proc/self/mountinfo").read_text().splitlines())
        c.close()  # gone without a disconnect
        _nothing_left(root, marker)
        again = DapClient(sock=socket.create_connection((host, int(port)), timeout=120))
        assert again.request("initialize", {"adapterID": "workbench"})["success"]
        again.close()
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(60) == 143
