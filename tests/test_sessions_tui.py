"""`workbench replay SESSION` in the TUI: a Pilot replays a curated session, then scrubs the timeline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from workbench.history.store import load_session
from workbench.progress.replay import EventSource
from workbench.progress.trace import DONE
from workbench.tui.replay_app import ReplayApp, timeline_text

SESSION = Path(__file__).resolve().parent.parent / "sessions" / "multi-stage-parallel" / "session"


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


async def _until(pilot: object, cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)  # type: ignore[attr-defined]


def test_replay_in_the_tui_fills_the_graph_and_scrubs() -> None:
    session = load_session(SESSION)
    replay = EventSource(session.events, speed=50.0)  # the 1.8 s build in well under a second
    app = ReplayApp(session, replay, theme="dark", devices=[], remember_theme=False)
    n = len(replay)
    keys = ("p", "comma", "full_stop", "left_square_bracket", "right_square_bracket", "left_curly_bracket",
            "right_curly_bracket", "plus", "minus")

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            active = app.active_bindings  # no key of the timeline is taken by the focused graph
            assert all(active[k].binding.action.split("(")[0] in ("toggle_pause", "step", "seek", "jump", "speed")
                       for k in keys), {k: active[k].binding.action for k in keys if k in active}
            assert replay.at_end and len(app.model.order) == 11
            assert app.model.counts() == {DONE: 11}
            timeline = str(app.query_one("#timeline").render())
            assert f"event {n}/{n}" in timeline

            await pilot.press("comma", "comma", "comma")  # three events back (and paused)
            await _until(pilot, lambda: replay.position == n - 3 and app.model.finished is None)
            assert replay.paused
            await _until(pilot, lambda: f"event {n - 3}/{n}" in str(app.query_one("#timeline").render()))

            await pilot.press("left_curly_bracket")  # to the start: nothing shown
            await _until(pilot, lambda: replay.position == 0)
            await pilot.pause(0.1)
            assert app.model.order == [] and replay.position == 0  # paused: nothing plays

            await pilot.press("full_stop", "full_stop")  # step two events: the first step started and ended
            await _until(pilot, lambda: len(app.model.order) == 1 and replay.position == 2)
            first = app.model.vertices[app.model.order[0]]
            assert first.state == DONE and first.name.startswith("[internal] load build definition")

            await pilot.press("right_square_bracket")  # 5 s on: past the end of a 1.8 s build
            await _until(pilot, lambda: app.model.finished is not None and replay.at_end)

            await pilot.press("left_curly_bracket", "p")  # from the start, playing again at 50×
            await _until(pilot, lambda: app.model.finished is not None and replay.at_end)
            assert len(app.model.order) == 11
            await pilot.press("q")

    asyncio.run(run())


def test_timeline_text() -> None:
    events = load_session(SESSION).events
    src = EventSource(events, speed=4)
    src.seek(len(events) // 2)
    text = timeline_text(src, width=10)
    assert f"event {len(events) // 2}/{len(events)}" in text and "×4" in text and text.startswith("▶")
    src.pause()
    assert timeline_text(src).startswith("⏸")
