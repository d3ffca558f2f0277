"""A breakpoint on `FROM scratch` (issue 18): the line makes no step (as in BuildKit), so, as gdb moves a
breakpoint on a line without code to the next line with code, the build stops before the stage's first step,
and setting it says so; a stage with no step at all says there is nothing to stop at. REPL and TUI."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import WORKBENCH
from tests.tui_pilot import until
from workbench.debug.controller import Breakpoint, Debugger
from workbench.debug.repl import DebugRepl
from workbench.progress.events import SourceLocation

BASE = "localhost:5055/busybox"
SCRATCH_STAGE = f"""\
FROM {BASE} AS build
RUN echo hi > /hi
FROM scratch
ENV A=1
COPY --from=build /hi /hi
"""
MOVED = "line 3: FROM scratch has no step to stop at: the build stops before the stage's first step, line 5"
EMPTY_STAGE = f"""\
FROM scratch AS empty
FROM {BASE}
RUN echo hi
"""
NOTHING = "line 1: FROM scratch has no step to stop at; break on the next step"


def _vertex(line: int, name: str) -> SimpleNamespace:
    return SimpleNamespace(digest=f"v{line}", name=name, source=SourceLocation("Dockerfile", line, line))


def test_the_from_lines_without_a_step_of_their_own() -> None:
    from workbench.debug.stepless import stepless_froms

    targets = stepless_froms(SCRATCH_STAGE + "FROM build AS again\nRUN true\n")
    assert sorted(targets) == [3, 6]
    assert targets[3].note(3) == MOVED
    assert targets[6].base == "build" and targets[6].first_step == 7  # a FROM of a stage makes no step either
    assert 1 not in targets  # a FROM of an image is a step (its pull)
    assert stepless_froms(EMPTY_STAGE)[1].note(1) == NOTHING
    stepless_froms("FROM scratch\nRUN <<EOF\n")  # a half-typed file does not raise


def test_the_debugger_stops_at_the_stages_first_step(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(SCRATCH_STAGE)
    dbg = Debugger()
    dbg.breakpoints.append(Breakpoint(line=3))
    assert not dbg.wants_fresh_run(_vertex(5, "[stage-1 1/1] COPY --from=build /hi /hi"))  # no Dockerfile known
    dbg.dockerfile = dockerfile
    assert dbg.wants_fresh_run(_vertex(5, "[stage-1 1/1] COPY --from=build /hi /hi"))
    assert not dbg.wants_fresh_run(_vertex(2, "[build 2/2] RUN echo hi > /hi"))
    assert not dbg.wants_fresh_run(_vertex(1, "[build 1/2] FROM " + BASE))


def test_the_repl_says_where_a_from_scratch_breakpoint_stops(tmp_path: Path) -> None:
    for text, line, said in ((SCRATCH_STAGE, 3, MOVED), (EMPTY_STAGE, 1, NOTHING)):
        dockerfile = tmp_path / "Dockerfile"
        dockerfile.write_text(text)
        out = io.StringIO()
        repl = DebugRepl(lambda dbg: None, out, engine=None, dockerfile=dockerfile)  # type: ignore[arg-type]
        repl.run_command(f"break {line}")
        assert out.getvalue() == f"breakpoint 1 at line {line}\n{said}\n", out.getvalue()
        out = io.StringIO()
        DebugRepl(lambda dbg: None, out, [Breakpoint(line=line)], engine=None,  # type: ignore[arg-type]
                  dockerfile=dockerfile)
        assert out.getvalue() == f"{said}\n"  # `--break` says it too
    dockerfile.write_text(SCRATCH_STAGE)
    out = io.StringIO()
    repl = DebugRepl(lambda dbg: None, out, engine=None, dockerfile=dockerfile)  # type: ignore[arg-type]
    repl.run_command("break 2")  # an ordinary line: nothing more to say
    assert out.getvalue() == "breakpoint 1 at line 2\n"


@pytest.mark.real
def test_the_repl_stops_before_the_first_step_of_a_from_scratch_stage(tmp_path: Path, registry: str) -> None:
    pexpect = pytest.importorskip("pexpect")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SCRATCH_STAGE)
    child = pexpect.spawn(WORKBENCH[0], ["debug", "--root", str(tmp_path / "root"), str(ctx)], cwd=str(tmp_path),
                          encoding="utf-8", timeout=60, dimensions=(40, 160),
                          env=dict(os.environ, WORKBENCH_SERVER="0", PROMPT_TOOLKIT_NO_CPR="1"))
    child.logfile_read = seen = io.StringIO()
    child.expect(r"\(debug\)")
    child.sendline("break 3")
    child.expect("breakpoint 1 at line 3")
    child.expect("FROM scratch has no step to stop at: the build stops before the stage's first step, line 5")
    child.expect(r"\(debug\)")
    child.sendline("continue")
    child.expect(r"Breakpoint before: \[stage-1 1/1\] COPY --from=build /hi /hi \(Dockerfile:5\)")
    child.expect(r"\(debug\)")
    child.sendline("continue")
    child.expect("build finished")
    if child.expect([r"\(debug\)", pexpect.EOF]) == 0:
        child.sendline("quit")
        child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen.getvalue()


def _editor_row(app: Any, number: int) -> str:
    from workbench.tui.widgets.editor import DockerfileEditor

    editor = app.query_one(DockerfileEditor)
    region = editor.content_region
    row = region.y + number - 1 - editor.scroll_offset.y
    strips = app.screen._compositor.render_strips()
    return strips[row].text[region.x:region.right]


@pytest.mark.real
def test_the_tui_stops_before_the_first_step_of_a_from_scratch_stage(registry: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.source import LiveBuildSource

    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SCRATCH_STAGE)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("5", "down", "down", "f9")  # the FROM scratch line
            assert app.debugging.lines() == {3}
            notes = [n.message for n in app._notifications]
            assert any(MOVED in m for m in notes), notes
            await pilot.press("escape", "r")
            await until(pilot, lambda: app.pause is not None)
            assert app.pause is not None and app.pause.reason == "breakpoint"
            assert app.pause.vertex.name == "[stage-1 1/1] COPY --from=build /hi /hi"
            await pilot.press("5")
            await pilot.pause(0.1)
            assert _editor_row(app, 3).startswith("3● FROM scratch"), _editor_row(app, 3)
            assert _editor_row(app, 5).startswith("5▶ COPY"), _editor_row(app, 5)
            await pilot.press("escape", "c")
            await until(pilot, lambda: app.model.finished is not None and app.generation == 2)
            assert app.model.finished is not None and app.model.finished.error == ""
            await pilot.press("q")

    asyncio.run(run())
