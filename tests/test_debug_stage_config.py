"""A pause at a step that is not a RUN (a COPY, a WORKDIR…) sees the stage's config as it stands there: the
env (ENV and ARG so far), the working directory and the user a RUN at that place would get, in `info`, in an
`exec` shell and in a captured command (the DAP server's `evaluate`). The config is display metadata: it
enters no digest, no Definition sent to a daemon and no recorded llb.jsonl."""

from __future__ import annotations

import dataclasses
import io
import threading
from pathlib import Path

import pytest

from workbench.frontend.dockerfile.convert import ConvertOptions, convert
from workbench.inspect import vertex_json
from workbench.llb.ops import Copy, ExecOp, FileOp, LocalSource, ScratchSource, StepConfig, Vertex, config_at
from workbench.remote.marshal import marshal

BASE = "localhost:5055/busybox"
DOCKERFILE = f"""\
FROM {BASE}
ARG LEVEL=3
ENV FOO=bar
WORKDIR /w
USER nobody
COPY a.txt a.txt
RUN true
"""
COPY_LINE = 6
PROBE = 'echo "FOO=$FOO LEVEL=$LEVEL"; pwd; id -u'
SEEN = "FOO=bar LEVEL=3\n/w\n65534\n"


def _no_image(ref: str, platform: str) -> tuple[str, str, dict]:  # type: ignore[type-arg]
    raise AssertionError(f"no image expected, got {ref}")


def test_each_step_carries_the_config_before_it() -> None:
    text = "FROM scratch\nARG A=1\nENV FOO=bar\nWORKDIR /w\nUSER nobody\nCOPY a.txt b\nWORKDIR sub\nCOPY a.txt c\n"
    steps = {v.source.start_line: v for v in convert(text, ConvertOptions(), _no_image).vertex.walk()
             if v.source is not None}
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A": "1", "FOO": "bar"}
    assert steps[4].config == StepConfig(env, "/", "")  # the WORKDIR runs where it was, before its own dir
    assert steps[6].config == StepConfig(env, "/w", "nobody")
    assert steps[7].config == StepConfig(env, "/w", "nobody")
    assert steps[8].config == StepConfig(env, "/w/sub", "nobody")
    assert steps[8].config.env[1:] == ("A=1", "FOO=bar")
    assert config_at(steps[8]) == steps[8].config
    run = Vertex(ExecOp(("true",), ("X=1=2",), "/r", "u"), config=StepConfig({"Y": "2"}))
    assert config_at(run) == StepConfig({"X": "1=2"}, "/r", "u")  # an exec's own fields are what it runs with


def test_the_config_is_in_no_digest_no_definition_and_no_record() -> None:
    op = FileOp((Copy(1, "/a", "/a"),))
    inputs = (Vertex(ScratchSource()), Vertex(LocalSource("context")))
    plain = Vertex(op, inputs, name="[1/1] COPY a /a")
    configured = dataclasses.replace(plain, config=StepConfig({"FOO": "bar"}, "/w", "nobody"))
    assert configured.config is not None and plain.digest == configured.digest
    assert marshal(plain).data == marshal(configured).data
    assert vertex_json(plain, []) == vertex_json(configured, [])
    # the same instructions after different ENV / WORKDIR / USER: the COPY's digest does not change
    a = convert("FROM scratch\nENV A=1\nCOPY x /x\n", ConvertOptions(), _no_image).vertex
    b = convert("FROM scratch\nENV A=2\nUSER u\nCOPY x /x\n", ConvertOptions(), _no_image).vertex
    assert a.config != b.config and a.digest == b.digest


def _project(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


@pytest.mark.real
def test_a_captured_command_at_a_copy_sees_env_workdir_and_user(tmp_path: Path, registry: str, root: Path) -> None:
    from workbench.debug.controller import Breakpoint, Debugger
    from workbench.engine import LocalEngine
    from workbench.progress.events import EventBus
    from workbench.request import BuildRequest
    from workbench.solver.session import Session

    ctx = _project(tmp_path)
    dbg = Debugger(break_on_error=False)
    dbg.breakpoints.append(Breakpoint(line=COPY_LINE))
    request = BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", build_args={}, target=None, outputs=[],
                           no_cache=False, root=root, session=Session(), cancel=threading.Event(), debugger=dbg)
    failure: list[BaseException] = []

    def build() -> None:
        try:
            LocalEngine().build(request, EventBus())
        except BaseException as e:  # noqa: BLE001 - reported by the test
            failure.append(e)
        finally:
            dbg.build_ended()

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    try:
        pause = dbg.wait_for_pause(120)
        assert pause is not None, failure
        assert pause.info()["step"].endswith("COPY a.txt a.txt")
        info = pause.info()
        assert "FOO=bar" in info["env"] and "LEVEL=3" in info["env"]
        assert (info["workdir"], info["user"], info["mounts"]) == ("/w", "nobody", [])
        out = io.BytesIO()
        code = dbg.run_captured(pause, ["sh", "-c", PROBE], lambda stream, chunk: out.write(chunk),
                                threading.Event())
        assert (code, out.getvalue().decode()) == (0, SEEN)
    finally:
        dbg.resume("continue")
        thread.join(120)
    assert not failure, failure


@pytest.mark.real
def test_the_repl_shows_and_runs_in_the_config_at_a_copy(tmp_path: Path, registry: str) -> None:
    pytest.importorskip("pexpect")
    from tests.test_debug import PROMPT, _spawn, continue_to_the_end

    ctx = _project(tmp_path)
    child = _spawn("--root", str(tmp_path / "root"), "--break", str(COPY_LINE), str(ctx), cwd=tmp_path)
    child.expect(r"Breakpoint before: \[\d/\d\] COPY a.txt a.txt")
    child.expect(PROMPT)
    child.sendline("info")
    child.expect("FOO=bar")
    child.expect("workdir: /w")
    child.expect("user: nobody")
    child.expect(PROMPT)
    child.sendline(f"exec sh -c '{PROBE}'")
    child.expect("FOO=bar LEVEL=3")
    child.expect("/w")
    child.expect("65534")
    child.expect(r"\[exit code 0\]")
    child.expect(PROMPT)
    continue_to_the_end(child)
