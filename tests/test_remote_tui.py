"""`workbench tui --addr ADDR [--frontend dockerfile.v0]`: the TUI's builds run on a real BuildKit (Docker 20.10's,
through the /grpc relay), with workbench's own graph or the daemon's frontend; the graph, logs and CACHED come
from the daemon's events, and what needs the local engine (breakpoints, shells, files, layers, predictions) is
off, said once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.tui_pilot import until
from workbench.cli import _build_parser
from workbench.progress.trace import CACHED, DONE
from workbench.tui.app import WorkbenchApp
from workbench.tui.launch import _engine
from workbench.tui.source import LiveBuildSource
from workbench.tui.widgets.dag_view import DagView

DOCKERFILE = """FROM localhost:5055/busybox
COPY hello.txt /hello.txt
RUN cat /hello.txt && echo tui-remote-$((6 * 7))
"""


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))
    monkeypatch.delenv("BUILDKIT_HOST", raising=False)


def _args(*argv: str) -> Any:
    return _build_parser().parse_args(["tui", *argv])


def dag_lines(dag: DagView) -> list[str]:
    out = []
    for index in range(len(dag.rows)):
        dag.scroll_to(y=max(0, index - dag.size.height + 1), animate=False, immediate=True)
        out.append(str(dag.render_line(index - dag.scroll_offset.y).text))
    return out


def test_flags_choose_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.remote.engine import RemoteEngine

    engine, remote = _engine(_args("--addr", "docker:///tmp/x.sock", "--frontend", "dockerfile.v0", "."))
    assert isinstance(engine, RemoteEngine) and remote == "Docker 20.10's BuildKit"
    monkeypatch.setenv("BUILDKIT_HOST", "unix:///run/bk.sock")
    engine, remote = _engine(_args("--frontend", "dockerfile.v0", "."))
    assert isinstance(engine, RemoteEngine) and remote == "the BuildKit at unix:///run/bk.sock"
    engine, remote = _engine(_args("."))  # workbench's own graph, sent to the daemon
    assert isinstance(engine, RemoteEngine) and engine.frontend == "" and remote
    with pytest.raises(ValueError, match="leave --frontend out"):
        _engine(_args("--frontend", "gateway.v0", "."))
    monkeypatch.delenv("BUILDKIT_HOST")
    with pytest.raises(ValueError, match="--frontend needs a BuildKit daemon"):
        _engine(_args("--frontend", "dockerfile.v0", "."))
    with pytest.raises(ValueError, match="--addr 'ftp://x'"):
        _engine(_args("--addr", "ftp://x", "--frontend", "dockerfile.v0", "."))
    engine, remote = _engine(_args("."))
    assert remote == "" and not isinstance(engine, RemoteEngine)


@pytest.mark.real
@pytest.mark.parametrize("frontend", [["--frontend", "dockerfile.v0"], []], ids=["dockerfile.v0", "our-graph"])
def test_tui_builds_on_docker_then_all_cached(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                              tmp_path: Path, root: Path, frontend: list[str]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    # its own text per path: our graph's ops are the daemon frontend's, so the other path's build would be CACHED
    (ctx / "hello.txt").write_text(f"hello from the tui {frontend}\n")
    args = _args("--addr", docker_daemon.addr, *frontend, str(ctx))
    engine, remote = _engine(args)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=root, engine=engine,
                             debuggable=False, remote=remote)

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(str(message))  # type: ignore[method-assign]
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None, timeout=240)
            assert app.model.finished is not None and app.model.finished.error == "", app.model.finished
            states = {v.name: v.state for v in app.model.vertices.values()}
            copy, run_step = "[2/3] COPY hello.txt /hello.txt", "[3/3] RUN cat /hello.txt && echo tui-remote-$((6 * 7))"
            assert states[copy] == DONE and states[run_step] == DONE, states
            ran = next(v for v in app.model.vertices.values() if v.name == run_step)
            assert ran.log.lines == [f"hello from the tui {frontend}", "tui-remote-42"]
            await pilot.pause(0.2)
            dag = app.query_one(DagView)
            shown = "\n".join(dag_lines(dag))
            assert "COPY hello.txt /hello.txt" in shown and "RUN cat /hello.txt" in shown, shown
            assert "CACHED" not in shown.split("COPY", 1)[1]
            status = str(app.query_one("#status").render())
            assert "on Docker 20.10's BuildKit" in status, status
            # the local engine's features are off, and said so once, not failing
            remote_notes = [n for n in notes if "not available on a remote BuildKit" in n]
            assert len(remote_notes) == 1 and "breakpoints" in remote_notes[0], notes
            for action in ("toggle_breakpoint", "debug_shell", "debug_diff", "browse_files", "layers"):
                assert app.check_action(action, ()) is False, action
            await pilot.press("b", "e", "f", "d", "L")
            assert not app.debugging.lines() and len(app.screen_stack) == 1
            assert not [n for n in notes if "cannot predict" in n]

            await pilot.press("r")  # the rerun: every step CACHED by the daemon
            await until(pilot, lambda: app.model.finished is not None and app.generation == 2, timeout=240)
            assert app.model.finished is not None and app.model.finished.error == ""
            states = {v.name: v.state for v in app.model.vertices.values()}
            assert states[copy] == CACHED and states[run_step] == CACHED, states
            await pilot.pause(0.2)
            lines = dag_lines(app.query_one(DagView))
            for step in ("COPY hello.txt /hello.txt", "RUN cat /hello.txt"):
                line = next(line for line in lines if step in line)
                assert "CACHED" in line, lines
            assert len([n for n in notes if "not available on a remote BuildKit" in n]) == 1
        app.stop()

    asyncio.run(run())
