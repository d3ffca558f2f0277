"""History in the TUI (issue 18, item 10), on real recorded builds: `H` lists this Dockerfile's past builds as
`history ls` does, newest first; `c` compares two side by side (the step that missed, and why); enter replays
one over the live app, and esc comes back to the live build as it was."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from textual.widgets import DataTable

from tests.conftest import WORKBENCH, wb
from tests.tui_pilot import until
from workbench.history.diff import ABSENT, StepChange, outcome, side_by_side
from workbench.history.store import RecordedSession, list_sessions, load_session
from workbench.progress.events import Event, SourceLocation, VertexCached, VertexCompleted, VertexStarted
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.history import CompareScreen, HistoryScreen
from workbench.tui.screens.replay import ReplayScreen
from workbench.tui.source import LiveBuildSource, ReplaySource
from workbench.tui.widgets.dag_view import DagView

SESSIONS = Path(__file__).resolve().parent.parent / "sessions" / "cache-miss-copy"
DOCKERFILE = """\
FROM localhost:5055/busybox
COPY a.txt /a.txt
RUN cat /a.txt && echo built
"""


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def _step(rows: list[StepChange], text: str) -> StepChange:
    return next(r for r in rows if text in r.name)


def _cells(table: DataTable, row: int) -> list[str]:  # type: ignore[type-arg]
    return [str(c) for c in table.get_row_at(row)]


def test_history_screen_lists_compares_and_replays(registry: str, root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "other.Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo another project\n")
    (ctx / "a.txt").write_text("one\n")
    wb(str(ctx), root=root)  # cold
    (ctx / "a.txt").write_text("two\n")
    wb(str(ctx), root=root)  # a.txt changed: COPY and RUN miss
    wb("-f", str(ctx / "other.Dockerfile"), str(ctx), root=root)  # another Dockerfile: not listed
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=root)
    app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False, theme="dark")

    async def run() -> None:
        async with app.run_test(size=(160, 45)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)  # the live build: all cached
            await until(pilot, lambda: len(list_sessions(root / "history")) == 4
                        and list_sessions(root / "history")[0].status == "completed")
            live_model, live_generation = app.model, app.generation

            await pilot.press("H")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.rows) == 3)
            screen = app.screen
            assert isinstance(screen, HistoryScreen)
            ours = [s.id for s in list_sessions(root / "history")
                    if s.meta.get("dockerfile") == str(ctx / "Dockerfile")]
            assert [r.id for r in screen.rows] == ours  # newest first, the other Dockerfile's build left out
            table = screen.query_one(DataTable)
            listed = {d["id"]: d for d in json.loads(subprocess.run(
                WORKBENCH + ["history", "ls", "--format", "json", "--root", str(root)], capture_output=True,
                text=True, check=True).stdout)}
            for n, ident in enumerate(ours):  # as `history ls` counts them
                cells, steps = _cells(table, n), listed[ident]["steps"]
                assert cells[1] == ident[:12] and cells[3] == "completed"
                assert cells[5:8] == [str(steps["total"]), str(steps["cached"]), str(steps["failed"])]
            live, changed = listed[ours[0]]["steps"], listed[ours[1]]["steps"]
            assert live["cached"] == changed["cached"] + 2  # COPY and RUN ran again after a.txt changed

            await pilot.press("down", "space", "down", "space", "c")  # the changed build against the cold one
            await until(pilot, lambda: isinstance(app.screen, CompareScreen))
            compare = app.screen
            assert isinstance(compare, CompareScreen)
            assert (compare.a.id, compare.b.id) == (ours[2], ours[1])  # A the older
            copy = _step(compare.rows, "COPY a.txt /a.txt")
            assert copy.changed is False and "a.txt changed" in copy.why  # ran in both: no change of state
            assert "parent step missed" in _step(compare.rows, "RUN cat /a.txt").why
            shown = compare.query_one(DataTable)
            on_screen = [_cells(shown, n) for n in range(shown.row_count)]
            copy_row = next(r for r in on_screen if "COPY a.txt" in r[0])
            assert copy_row[1:3] == ["ran", "ran"] and "a.txt changed" in copy_row[5]

            await pilot.press("escape")  # back to the list; the newest against the one before it
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen))
            await pilot.press("space", "up", "space", "up")  # both unmarked; the cursor on the newest
            assert screen.marked == [] and screen.cursor_row() is screen.rows[0]
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen))
            compare = app.screen
            assert isinstance(compare, CompareScreen) and (compare.a.id, compare.b.id) == (ours[1], ours[0])
            copy = _step(compare.rows, "COPY a.txt /a.txt")
            assert copy.changed and "B found A's result in the cache" in copy.why
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen))

            await pilot.press("down", "enter")  # replay the changed build over the live app
            await until(pilot, lambda: isinstance(app.screen, ReplayScreen))
            replay = app.screen
            assert isinstance(replay, ReplayScreen) and replay.session.id == ours[1]
            await pilot.press("right_curly_bracket")
            await until(pilot, lambda: replay.player.synced and replay.player.model.finished is not None)
            missed = [v for v in replay.player.model.vertices.values() if "a.txt changed" in v.miss_reason]
            assert [v.name for v in missed] == [copy.name]
            await pilot.press("comma", "comma")
            await until(pilot, lambda: replay.player.synced and replay.player.model.finished is None)

            assert app.model is live_model and app.generation == live_generation  # the live build untouched
            await pilot.press("escape")  # straight back to the live view
            await until(pilot, lambda: len(app.screen_stack) == 1)
            assert app.query_one(DagView).model is app.model and app.model.finished is not None
            assert app.generation == live_generation
            await pilot.press("q")

    asyncio.run(run())


def _session(tmp: Path, name: str, steps: list[tuple[str, int, str]]) -> RecordedSession:
    """A recorded build of `steps` (name, Dockerfile line, miss reason; "" for cached)."""
    events: list[Event] = []
    for n, (step, line, why) in enumerate(steps):
        vid, src = f"sha256:{name}{n:060d}", SourceLocation("Dockerfile", line, line)
        if why:
            events += [VertexStarted(vid, step, source=src, miss_reason=why, ts=n),
                       VertexCompleted(vid, step, duration=0.5, ts=n + 0.5)]
        else:
            events.append(VertexCached(vid, step, source=src, ts=n))
    return RecordedSession(tmp / name, {"id": name}, None, events=events)


def test_compare_pairs_steps_whose_counters_shifted_or_whose_line_was_edited(tmp_path: Path) -> None:
    a = _session(tmp_path, "a", [("[1/3] FROM busybox", 1, ""), ("[2/3] COPY a /a", 2, "never built before"),
                                 ("[3/3] RUN make", 3, "never built before")])
    b = _session(tmp_path, "b", [("[1/4] FROM busybox", 1, ""), ("[2/4] RUN apt-get install -y gcc", 2,
                                                                  "never built before"),
                                 ("[3/4] COPY a /a", 3, "parent step missed: [2/4] RUN apt-get install -y gcc"),
                                 ("[4/4] RUN make -j8", 4, "parent step missed: [3/4] COPY a /a")])
    edited = _session(tmp_path, "c", [("[1/3] FROM busybox", 1, ""), ("[2/3] COPY a /a", 2, ""),
                                      ("[3/3] RUN make -j8", 3, "its command changed")])

    def pairs(x: RecordedSession, y: RecordedSession) -> list[tuple[str | None, str | None, bool]]:
        return [(r.a.name if r.a else None, r.b.name if r.b else None, r.changed) for r in side_by_side(x, y)]

    assert pairs(a, b) == [("[1/3] FROM busybox", "[1/4] FROM busybox", False),  # the counter shifted
                           (None, "[2/4] RUN apt-get install -y gcc", True),  # added
                           ("[2/3] COPY a /a", "[3/4] COPY a /a", False),  # ran in both
                           (None, "[4/4] RUN make -j8", True),  # edited and moved: a new step
                           ("[3/3] RUN make", None, True)]
    assert pairs(a, edited) == [("[1/3] FROM busybox", "[1/3] FROM busybox", False),
                                ("[2/3] COPY a /a", "[2/3] COPY a /a", True),  # ran, then cached
                                ("[3/3] RUN make", "[3/3] RUN make -j8", True)]  # edited in place: its line
    rows = side_by_side(a, edited)
    assert [(outcome(r.a), outcome(r.b)) for r in rows] == [("cached", "cached"), ("ran", "cached"), ("ran", "ran")]
    assert rows[2].why == "its command changed" and "B found A's result in the cache" in rows[1].why
    assert outcome(None) == ABSENT


def test_a_build_started_under_the_history_screens_shows_once_they_close(tmp_path: Path) -> None:
    """As the watcher starts a build on a change while `H` or a replay is open: the live app takes it in the
    background, and shows it on coming back."""
    history = tmp_path / "root" / "history"
    for name in ("session", "restructured-session"):
        shutil.copytree(SESSIONS / name, history / name)
    source = ReplaySource(load_session(history / "session").events)
    source.root = tmp_path / "root"
    app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False, theme="dark")

    def status() -> str:
        return str(app.query_one("#status").render())

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("H")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.rows) == 2)
            older = app.screen.rows[1].id
            app.start_build()
            await until(pilot, lambda: app.generation == 2 and app.model.finished is not None)
            await pilot.press("down", "enter")
            await until(pilot, lambda: isinstance(app.screen, ReplayScreen))
            replay = app.screen
            assert isinstance(replay, ReplayScreen) and replay.session.id == older
            app.start_build()
            await until(pilot, lambda: app.generation == 3 and app.model.finished is not None)
            await pilot.press("right_curly_bracket")
            await until(pilot, lambda: replay.player.synced and replay.player.model.finished is not None)
            await pilot.press("escape")
            await until(pilot, lambda: len(app.screen_stack) == 1 and "build #3 finished" in status())
            assert app.query_one(DagView).model is app.model and len(app.model.order) == len(
                {e.vertex for e in source.events if hasattr(e, "vertex") and e.vertex})
            await pilot.press("q")

    asyncio.run(run())
