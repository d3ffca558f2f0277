"""The editor marks breakpoints and the paused step with a glyph in its gutter, not with colour alone (issue 18)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.tui_events import DOCKERFILE, sample_events
from tests.tui_pilot import until
from workbench.tui.app import WorkbenchApp
from workbench.tui.source import ReplaySource
from workbench.tui.widgets.editor import DockerfileEditor

BREAKPOINT_GLYPH, PAUSE_GLYPH = "●", "▶"


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def screen_lines(app: Any) -> list[str]:
    """The text of the screen as the terminal shows it, a string per row."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def editor_row(app: Any, number: int) -> str:
    """The screen row showing the editor's line `number` (1-based), from its gutter on."""
    editor = app.query_one(DockerfileEditor)
    region = editor.content_region
    row = region.y + number - 1 - editor.scroll_offset.y
    return screen_lines(app)[row][region.x:region.right]


def test_breakpoints_and_the_paused_line_have_a_gutter_glyph(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    app = WorkbenchApp(ReplaySource(sample_events(), dockerfile=dockerfile), devices=[], remember_theme=False,
                       clock=lambda: sample_events()[-1].ts)

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("5")
            editor = app.query_one(DockerfileEditor)
            editor.set_debug_marks({2}, {5})  # a breakpoint on line 3, paused at line 6
            await pilot.pause(0.05)
            assert editor_row(app, 3).startswith(f"3{BREAKPOINT_GLYPH} COPY app.txt"), editor_row(app, 3)
            assert editor_row(app, 6).startswith(f"6{PAUSE_GLYPH} RUN echo building"), editor_row(app, 6)
            assert editor_row(app, 2).startswith("2  RUN echo preparing"), editor_row(app, 2)  # no mark, no glyph

            editor.set_debug_marks({2, 5}, set())  # the pause ends: the breakpoint under it shows again
            await pilot.pause(0.05)
            assert editor_row(app, 6).startswith(f"6{BREAKPOINT_GLYPH} RUN"), editor_row(app, 6)
            editor.set_debug_marks(set(), set())
            await pilot.pause(0.05)
            assert editor_row(app, 3).startswith("3  COPY"), editor_row(app, 3)
            await pilot.press("escape", "q")

    asyncio.run(run())


def test_f9_in_the_editor_draws_the_glyph_on_the_cursor_line(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    source = ReplaySource(sample_events(), dockerfile=dockerfile)
    app = WorkbenchApp(source, devices=[], remember_theme=False, clock=lambda: sample_events()[-1].ts)

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            source.debuggable = True  # breakpoints are kept for the next live build; none runs here
            await pilot.press("5", "down", "f9")
            await pilot.pause(0.05)
            assert app.debugging.lines() == {2}
            assert editor_row(app, 2).startswith(f"2{BREAKPOINT_GLYPH} RUN"), editor_row(app, 2)
            await pilot.press("f9")
            await pilot.pause(0.05)
            assert editor_row(app, 2).startswith("2  RUN"), editor_row(app, 2)
            await pilot.press("escape", "q")

    asyncio.run(run())
