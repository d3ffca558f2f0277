"""`?`: the help is built from the running app's bindings, grouped, and scrolls with the keys (issue 18)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.binding import Binding
from textual.containers import VerticalScroll

from tests.tui_events import DOCKERFILE, sample_events
from tests.tui_pilot import until
from workbench.history.store import load_session
from workbench.progress.replay import EventSource
from workbench.tui.app import WorkbenchApp
from workbench.tui.replay_app import ReplayApp
from workbench.tui.screens.help import HelpScreen
from workbench.tui.source import ReplaySource

SESSION = Path(__file__).resolve().parent.parent / "sessions" / "multi-stage-parallel" / "session"


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def screen_text(app: Any) -> str:
    """The text of the screen as the terminal shows it."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def _app(tmp_path: Path, cls: type[WorkbenchApp] = WorkbenchApp) -> WorkbenchApp:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    return cls(ReplaySource(sample_events(), dockerfile=dockerfile), devices=[], remember_theme=False,
               clock=lambda: sample_events()[-1].ts)


def test_key_labels() -> None:
    from workbench.tui.screens.help import key_label

    assert key_label("f9,b") == "F9 / b"
    assert key_label("question_mark") == "?"
    assert key_label("left_square_bracket,full_stop,plus,minus") == "[ / . / + / -"
    assert key_label("escape,pagedown") == "esc / pgdn"


def test_help_scrolls_to_its_last_binding_at_80x24(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause(0.1)
            screen = app.screen
            assert isinstance(screen, HelpScreen)
            scroll = screen.query_one(VerticalScroll)
            assert scroll.max_scroll_y > 0 and scroll.scroll_y == 0  # too long for 24 rows
            await pilot.press("end")
            await pilot.pause(0.1)
            assert scroll.scroll_y == scroll.max_scroll_y
            groups = list(dict.fromkeys(e.group for e in screen.entries))
            assert groups[:2] == ["build", "debugger"] and {"graph", "logs", "editor"} <= set(groups), groups
            first, last = screen.entries[0], screen.entries[-1]
            assert last.text[:30] in screen_text(app), screen_text(app)
            assert first.text[:30] not in screen_text(app)
            await pilot.press("home")
            await pilot.pause(0.1)
            assert first.text[:30] in screen_text(app) and last.text[:30] not in screen_text(app)
            for _ in range(6):
                await pilot.press("pagedown")
            await pilot.pause(0.1)
            assert last.text[:30] in screen_text(app), screen_text(app)
            await pilot.press("pageup", "up", "k")
            await pilot.pause(0.1)
            assert last.text[:30] not in screen_text(app)
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("q")

    asyncio.run(run())


def test_the_replay_apps_help_lists_its_timeline_keys() -> None:
    session = load_session(SESSION)
    app = ReplayApp(session, EventSource(session.events, speed=50.0), theme="dark", devices=[],
                    remember_theme=False)

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            screen = app.screen
            assert isinstance(screen, HelpScreen)
            replay = {e.keys: e.text for e in screen.entries if e.group == "replay"}
            for key in ("p", ".", ",", "[", "]", "{", "}", "+", "-"):
                assert key in replay, replay
            assert replay["."].startswith("one event forward") and replay["-"] == "play half as fast", replay
            text = screen_text(app)
            assert "replay" in text and "pause / play the replay" in text, text
            await pilot.press("escape", "q")

    asyncio.run(run())


def test_a_key_added_to_the_app_shows_in_the_help_unedited(tmp_path: Path) -> None:
    class WithYak(WorkbenchApp):
        CSS_PATH = Path(sys.modules[WorkbenchApp.__module__].__file__ or "").with_name("app.tcss")
        BINDINGS = [*WorkbenchApp.BINDINGS, Binding("Y", "yak", "Yak", tooltip="shave the yak")]

        def action_yak(self) -> None:
            pass

    app = _app(tmp_path, WithYak)

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            screen = app.screen
            assert isinstance(screen, HelpScreen)
            added = [e for e in screen.entries if e.keys == "Y"]
            assert [(e.group, e.text) for e in added] == [("more", "shave the yak")], added
            assert len([e for e in screen.entries if e.keys == "F9 / b"]) == 1  # each binding once
            await pilot.press("escape", "q")

    asyncio.run(run())
