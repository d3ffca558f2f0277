"""`workbench dap` against hostile or unlucky input, on real builds: file names that are not UTF-8, a build that
goes on while a command or a terminal still looks at the old stop, secrets at the evaluate cut or not UTF-8,
paths that are no regular file, requests before launch, and a build thread that does not end."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.test_dap_adapter import BASE, DapClient, _end, _launch, _project
from workbench.dap.protocol import encode

SECRET = b"SUPERSECRET\xffVALUE123"  # not UTF-8: must be masked all the same


def _quiet(c: DapClient, name: str) -> list[dict[str, Any]]:
    return [m for m in c.seen if m.get("event") == name]


@pytest.mark.real
def test_a_file_name_that_is_not_utf8_is_shown_escaped_and_the_session_goes_on(
        tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN touch \"/bad$(printf '\\377')name\"\nRUN echo two\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), [3])
        c.stopped()
        top = c.variables(c.scopes()["Filesystem"])
        assert "bad\\xffname" in top, list(top)
        assert top["bad\\xffname"]["evaluateName"] == "/bad\\xffname"
        c.request("continue", {"threadId": 1})
        _end(c)
    finally:
        c.close()


@pytest.mark.real
def test_continue_ends_an_evaluate_that_never_ends_and_the_build_goes_on(
        tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one\nRUN echo STEP-TWO-RAN\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), [3])
        c.stopped()
        hold = c.send("evaluate", {"expression": "yes > /dev/null", "context": "repl"})
        time.sleep(1)
        assert c.request("continue", {"threadId": 1})["success"]
        ended = c.wait(lambda m: m.get("type") == "response" and m.get("request_seq") == hold, 60)
        assert not ended["success"] and "no longer paused" in ended["message"], ended
        assert c.event("exited", 60)["body"]["exitCode"] == 0, c.outputs()
        assert "STEP-TWO-RAN" in c.outputs("stdout")
        assert "evaluate 'yes > /dev/null' was stopped: the build went on (continue)" in c.outputs("important")
        c.event("terminated")
        assert c.request("disconnect")["success"]
        assert c.proc.wait(60) == 0
    finally:
        c.close()


@pytest.mark.real
def test_nothing_runs_in_a_stop_the_build_has_left(tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one > /one\nRUN echo two\nRUN sleep 2\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root), [3], client={"supportsRunInTerminalRequest": True})
        c.stopped()
        assert c.request("evaluate", {"expression": "exec", "context": "repl"})["success"]
        ask = c.wait(lambda m: m.get("type") == "request" and m.get("command") == "runInTerminal")
        path = ask["arguments"]["args"][-1]
        c.write(encode({"seq": 99, "type": "response", "request_seq": ask["seq"], "command": "runInTerminal",
                        "success": True, "body": {}}))
        first = c.send("evaluate", {"expression": "sleep 3", "context": "repl"})
        time.sleep(0.5)
        queued = c.send("evaluate", {"expression": "printf 'B-%s\\n' RAN; cat /one", "context": "repl"})
        time.sleep(0.2)
        assert c.request("continue", {"threadId": 1})["success"]
        for seq in (first, queued):
            answer = c.wait(lambda m, s=seq: m.get("type") == "response" and m.get("request_seq") == s, 60)
            assert not answer["success"] and "no longer paused" in answer["message"], answer
        with pytest.raises(OSError):  # the terminal that attaches late finds no shell
            socket.socket(socket.AF_UNIX).connect(path)
        _end(c)
        assert "B-RAN" not in c.raw_out.decode(errors="replace")
    finally:
        c.close()


@pytest.mark.real
def test_secrets_are_masked_across_the_evaluate_cut_and_when_not_utf8(
        tmp_path: Path, registry: str, root: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(SECRET)
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one\n"
                            "RUN --mount=type=secret,id=s,target=/run/secrets/s cat /run/secrets/s\nRUN echo after\n")
    c = DapClient(tmp_path)
    try:
        c.start(_launch(df, root, "--secret", f"id=s,src={secret}"), [3])
        c.stopped()
        whole = c.request("evaluate", {"expression": "cat /run/secrets/s; echo", "context": "repl"})
        assert whole["body"]["result"] == "****\n", whole
        cut = c.request("evaluate", {"expression": "head -c 65530 /dev/zero | tr '\\0' a; cat /run/secrets/s",
                                     "context": "repl"})["body"]["result"]
        assert cut.startswith("a" * 65530) and "[output cut at 64 KiB" in cut, cut[65520:]
        assert "SUPER" not in cut and "VALUE" not in cut, cut[65520:]
        sc = c.scopes()
        top = c.variables(sc["Filesystem"])  # busybox has no /run: the secret's parents show all the same
        run = c.variables(top["run/"]["variablesReference"])
        assert list(c.variables(run["secrets/"]["variablesReference"])) == ["s"]
        c.request("continue", {"threadId": 1})
        _end(c)
        raw = c.raw_out.decode("utf-8", "replace")
        assert "SUPERSECRET" not in raw and "VALUE123" not in raw
    finally:
        c.close()


@pytest.mark.real
def test_step_names_are_masked_in_exception_info_and_the_terminal_title(
        tmp_path: Path, registry: str, root: Path) -> None:
    df = _project(tmp_path, f"FROM {BASE}\nRUN echo one\n"
                            "RUN --mount=type=secret,id=tok test name-s3cr3t-77 = nope\n")
    c = DapClient(tmp_path, TOK="name-s3cr3t-77")
    try:
        c.start(_launch(df, root, "--secret", "id=tok,env=TOK"), [], ["error"],
                client={"supportsRunInTerminalRequest": True})
        assert c.stopped()["reason"] == "exception"
        info = c.request("exceptionInfo", {"threadId": 1})["body"]
        assert "****" in info["details"]["typeName"], info
        assert c.request("evaluate", {"expression": "exec", "context": "repl"})["success"]
        ask = c.wait(lambda m: m.get("type") == "request" and m.get("command") == "runInTerminal")
        assert "****" in ask["arguments"]["title"], ask
        c.request("continue", {"threadId": 1})
        _end(c, 1)
        assert "name-s3cr3t-77" not in c.raw_out.decode()
    finally:
        c.close()


def test_paths_that_are_no_regular_file_are_refused_without_reading_them(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    c = DapClient(tmp_path)
    try:
        c.request("initialize", {"adapterID": "workbench"})
        for path in (fifo, Path("/dev/zero")):
            bps = c.request("setBreakpoints", {"source": {"path": str(path)}, "breakpoints": [{"line": 1}]}, 30)
            assert bps["success"] and not bps["body"]["breakpoints"][0]["verified"], bps
        source = c.request("source", {"source": {"path": "/etc/passwd"}}, 30)
        assert not source["success"] and "only the launched Dockerfile" in source["message"]
        bad = c.request("launch", {"dockerfile": str(fifo), "args": ["--root", str(tmp_path / "root")]}, 30)
        assert not bad["success"] and "is a FIFO, not a regular file" in bad["message"], bad
        assert c.request("disconnect")["success"]
        assert c.proc.wait(30) == 0
    finally:
        c.close()


def test_terminate_before_launch_answers_and_sends_nothing_else(tmp_path: Path) -> None:
    c = DapClient(tmp_path)
    try:
        c.request("initialize", {"adapterID": "workbench"})
        assert c.request("terminate", timeout=30)["success"]
        assert c.request("disconnect", timeout=30)["success"]
        assert c.proc.wait(30) == 0
        time.sleep(0.2)
        while not c.messages.empty():
            c.seen.append(c.messages.get())
        assert not _quiet(c, "exited") and not _quiet(c, "terminated"), c.seen
    finally:
        c.close()


def test_a_directory_is_listed_once_per_stop_and_paged_from_that_listing() -> None:
    from workbench.dap.variables import References, directory
    from workbench.debug.fsview import Entry

    calls: list[str] = []

    def list_dir(path: str) -> list[Entry]:
        calls.append(path)
        return [Entry(f"f{i}", 0o100644, 0, 0, i) for i in range(10)]

    refs = References()
    ref = refs.add(directory("/", refs, lambda s: s, list_dir))
    provider = refs.get(ref)
    assert provider is not None
    pages = [v["name"] for start in range(0, 10, 3) for v in provider(start, 3)]
    assert pages == [f"f{i}" for i in range(10)] and calls == ["/"]
    refs.clear()  # the build went on: the next stop lists afresh
    refs.get(refs.add(directory("/", refs, lambda s: s, list_dir)))(0, None)  # type: ignore[misc]
    assert calls == ["/", "/"]


def test_close_gives_up_loudly_on_a_build_thread_that_does_not_end(capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.dap.adapter import Session
    from workbench.dap.protocol import Writer

    session = Session(Writer(lambda b: None), None)  # type: ignore[arg-type]
    stuck = threading.Event()
    session.thread = threading.Thread(target=stuck.wait, daemon=True)
    session.thread.start()
    try:
        assert session.close(wait=0.5) is False
        assert "the build did not end within 0.5 s of being aborted" in capsys.readouterr().err
    finally:
        stuck.set()


def test_a_request_that_fails_while_answering_is_an_error_response_and_the_session_goes_on() -> None:
    from workbench.dap.adapter import Session
    from workbench.dap.protocol import Decoder, Writer

    sent: list[bytes] = []
    writer = Writer(sent.append)
    session = Session(writer, None)  # type: ignore[arg-type]
    session.on_threads = lambda args, seq: {"threads": {object()}}  # type: ignore[method-assign]  # no JSON
    assert session.handle({"seq": 1, "type": "request", "command": "threads"}) is True
    assert session.handle({"seq": 2, "type": "request", "command": "terminate"}) is True
    getattr(writer, "flush", lambda: None)()
    answers = [m for m in Decoder(json.loads).feed(b"".join(sent)) if isinstance(m, dict)]
    assert [(a["request_seq"], a["success"]) for a in answers] == [(1, False), (2, True)], answers
    assert answers[0]["message"].startswith("threads: TypeError: "), answers


def test_a_command_for_a_pause_the_build_has_left_never_touches_its_step() -> None:
    from types import SimpleNamespace

    from workbench.debug.controller import Debugger, Pause

    touched: list[str] = []

    @contextmanager
    def container_spec(argv: list[str]) -> Iterator[Any]:
        touched.append("container_spec")
        yield SimpleNamespace(mounts=[])

    step = SimpleNamespace(worker=SimpleNamespace(root=Path("/nonexistent")), container_spec=container_spec,
                           release=lambda: touched.append("release"), vertex=None)
    dbg = Debugger()
    pause = Pause(step, "breakpoint")  # type: ignore[arg-type]  # never current: the build went on
    with pytest.raises(RuntimeError, match="no longer paused"):
        dbg.run_captured(pause, ["true"], lambda n, b: None, threading.Event())
    with pytest.raises(RuntimeError, match="no longer paused"):
        dbg.exec(pause, ["sh"])
    assert touched == []


def test_a_released_step_mounts_no_new_workspace() -> None:
    from types import SimpleNamespace

    from workbench.solver.step import NoFilesystem, Step

    prepared: list[str] = []
    snapshots = SimpleNamespace(prepare=lambda: prepared.append("prepare"))
    step = Step(SimpleNamespace(snapshots=snapshots), SimpleNamespace(cancel=threading.Event(), results={}),  # type: ignore[arg-type]
                None, [])  # type: ignore[arg-type]
    step.release()
    with pytest.raises(NoFilesystem, match="no longer paused"):
        step.workspace()
    assert prepared == []


@pytest.mark.parametrize("secret", [b"plain-secret-value", SECRET])
def test_evaluate_masks_a_value_split_across_chunks_and_the_cut(secret: bytes) -> None:
    from workbench.dap.evaluate import EVAL_LIMIT, captured
    from workbench.progress.redact import Redactor

    class Target:
        def run_captured(self, stop: Any, argv: list[str], on_output: Any, cancel: threading.Event) -> int:
            on_output(1, b"a" * (EVAL_LIMIT - 6) + secret[:3])  # the value starts 6 bytes before the cut
            on_output(1, secret[3:] + b"b" * 10)
            on_output(2, secret)
            return 0

    text = captured(Target(), None, "x", threading.Event(), Redactor([secret]))  # type: ignore[arg-type]
    shown = text.split("\n[output cut")[0]
    assert shown == "a" * (EVAL_LIMIT - 6) + "****" + "b" * 2, shown[-40:]
    assert secret[:3].decode() not in text.replace("a" * 100, "")
