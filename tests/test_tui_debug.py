"""The debugger in the TUI, on real builds (Pilot): a breakpoint set by key, next / continue, the pause bar,
the diff screen, break on error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.tui_pilot import until as _until
from workbench.progress.trace import FAILED
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.diff import DiffScreen
from workbench.tui.source import LiveBuildSource
from workbench.tui.widgets.dag_view import DagView
from workbench.tui.widgets.debug_bar import DebugBar
from workbench.tui.widgets.editor import DockerfileEditor

DOCKERFILE = """\
FROM localhost:5055/busybox
RUN echo one > /one
COPY a.txt /a.txt
RUN echo done
"""


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def _paused_at(app: WorkbenchApp, line: int) -> bool:
    src = app.pause.vertex.source if app.pause is not None else None
    return src is not None and src.start_line == line


def test_breakpoint_next_continue_and_diff_in_the_tui(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            assert app.model.finished is not None and app.model.finished.error == ""
            assert app.pause is None and not app.query_one(DebugBar).display

            # F9 on the editor's line 2, then back to the graph and rerun
            await pilot.press("5", "down", "f9")
            editor = app.query_one(DockerfileEditor)
            assert app.debugging.lines() == {2} and editor.breakpoint_lines == {1}
            await pilot.press("escape", "r")
            await _until(pilot, lambda: app.pause is not None)
            assert _paused_at(app, 2) and app.pause is not None and app.pause.reason == "breakpoint"
            await pilot.pause(0.1)
            assert editor.pause_lines == {1}
            bar = app.query_one(DebugBar)
            assert bar.display and "paused before" in bar.text and "RUN echo one > /one" in bar.text
            assert "Dockerfile line 2" in bar.text and "workdir /" in bar.text and "user root" in bar.text
            assert "paused at line 2" in str(app.query_one("#status").render())
            assert app.query_one(DagView).selected == app.pause.vertex.digest
            assert app.model.paused is not None and app.model.paused.reason == "breakpoint"

            await pilot.press("s")  # next: runs line 2, stops before the COPY
            await _until(pilot, lambda: _paused_at(app, 3))
            assert app.pause is not None and app.pause.reason == "step" and "COPY a.txt" in app.pause.vertex.name
            await pilot.press("f10")
            await _until(pilot, lambda: _paused_at(app, 4))
            # `d` diffs up to the graph's selection: wait until it has followed the pause (under load it can
            # still be on the step before, and the diff is then the one before the COPY)
            await _until(pilot, lambda: app.pause is not None
                         and app.query_one(DagView).selected == app.pause.vertex.digest)

            await pilot.press("d")
            await _until(pilot, lambda: isinstance(app.screen, DiffScreen) and bool(app.screen.lines))
            screen = app.screen
            assert isinstance(screen, DiffScreen)
            assert [label for _, label in screen.steps][-2:] == ["#6 [2/4] RUN echo one > /one",
                                                                 "#7 [3/4] COPY a.txt /a.txt"], screen.steps
            assert screen.lines == ["A /a.txt (6 B)"], screen.lines  # the step before the COPY → the COPY
            await pilot.press("up", "enter")  # A: the FROM step instead
            await _until(pilot, lambda: "A /one (4 B)" in screen.lines)
            assert "A /a.txt (6 B)" in screen.lines
            await pilot.press("escape")

            await pilot.press("c")
            await _until(pilot, lambda: app.model.finished is not None and app.generation == 2)
            assert app.model.finished is not None and app.model.finished.error == ""
            assert app.pause is None and not app.query_one(DebugBar).display
            done = next(v for v in app.model.vertices.values() if "RUN echo done" in v.name)
            assert done.log.lines == ["done"]

            # break on error (on by default): the failed step is held, continue lets the build fail
            (ctx / "Dockerfile").write_text(DOCKERFILE + "RUN echo half > /half && exit 3\n")
            await pilot.press("5", "f9", "escape")  # the cursor is still on line 2: clears the breakpoint
            assert app.debugging.lines() == set()
            await pilot.press("r")
            await _until(pilot, lambda: app.pause is not None and app.pause.reason == "error")
            assert "failed" in app.query_one(DebugBar).text and "exit code: 3" in app.query_one(DebugBar).text
            await pilot.press("c")
            await _until(pilot, lambda: app.model.finished is not None and app.generation == 3)
            assert app.model.finished is not None and "exit code: 3" in app.model.finished.error
            assert any(v.state == FAILED for v in app.model.vertices.values())
            await pilot.press("q")

    asyncio.run(run())
