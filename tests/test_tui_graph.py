"""The TUI's graph (Pilot, replayed builds of known shapes): lanes like `git log --graph`, the critical path,
breakpoint and predicted re-run marks, 80 columns and 500 vertices."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.graph_events import CHAIN, CHAIN_DOCKERFILE, FORK_MERGE, FORK_MERGE_DOCKERFILE, big, digest, events_of
from tests.tui_pilot import until
from workbench.tui.app import WorkbenchApp
from workbench.tui.source import ReplaySource
from workbench.tui.widgets.dag_view import DagView

CRITICAL, BREAKPOINT, PREDICTED = "◆", "●", "↻"
"""The marks of a step on the critical path, with a breakpoint, predicted to re-run."""


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def _app(tmp_path: Path, steps: list[Any], dockerfile: str) -> WorkbenchApp:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    events = events_of(steps)
    source = ReplaySource(events, dockerfile=tmp_path / "Dockerfile")
    source.debuggable = True  # breakpoints can be set (a replay never stops at them)
    return WorkbenchApp(source, devices=[], clock=lambda: events[-1].ts, remember_theme=False)


def lines(dag: DagView) -> list[str]:
    """Every row of the graph as drawn (scrolling it into view)."""
    out = []
    for index in range(len(dag.rows)):
        dag.scroll_to(y=max(0, index - dag.size.height + 1), animate=False, immediate=True)
        out.append(str(dag.render_line(index - dag.scroll_offset.y).text))
    return out


def node_line(dag: DagView, vid: str) -> str:
    index = next(n for n, row in enumerate(dag.rows) if row.vertex == vid)
    dag.scroll_to(y=max(0, index - dag.size.height + 1), animate=False, immediate=True)
    return str(dag.render_line(index - dag.scroll_offset.y).text)


async def _settled(pilot: Any, app: WorkbenchApp) -> DagView:
    await until(pilot, lambda: app.model.finished is not None)
    await pilot.pause(0.2)
    return app.query_one(DagView)


def test_a_chain_of_steps_is_one_straight_lane(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path, CHAIN, CHAIN_DOCKERFILE)
        async with app.run_test(size=(120, 40)) as pilot:
            dag = await _settled(pilot, app)
            drawn = lines(dag)
            assert drawn[0].startswith(" ▾ stage main")
            steps = drawn[1:5]
            assert [line[:5] for line in steps] == [" ≡ #1", " ✔ #2", " ✔ #3", " ✔ #4"], drawn  # one lane
            assert not any(c in "".join(drawn) for c in "╰╯├┤─"), drawn  # no staircase, no edges drawn aside
            await pilot.press("q")

    asyncio.run(run())


def test_two_stages_joined_by_copy_from_fork_and_merge(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path, FORK_MERGE, FORK_MERGE_DOCKERFILE)
        async with app.run_test(size=(120, 40)) as pilot:
            dag = await _settled(pilot, app)
            drawn = lines(dag)
            assert drawn[3].startswith(" ├─▾ stage build"), drawn  # the fork: build branches off base
            assert node_line(dag, digest(2)).startswith(" │ ✔ #3 [1/1] RUN make")
            assert drawn[5].startswith(" ▾ │ stage stage-2"), drawn  # stage-2 goes on in base's lane
            assert node_line(dag, digest(4)).startswith(" ✔─╯ #5 [2/2] COPY --from=build"), drawn  # the merge
            await pilot.press("q")

    asyncio.run(run())


def test_the_critical_path_is_marked_and_durations_right_aligned(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path, FORK_MERGE, FORK_MERGE_DOCKERFILE)
        async with app.run_test(size=(120, 40)) as pilot:
            dag = await _settled(pilot, app)
            on_path = {n: node_line(dag, digest(n)) for n in range(5)}
            for n in (0, 1, 2, 4):  # FROM, COPY a.txt, RUN make, COPY --from: 0.5 + 3.0 + 0.2 s
                assert on_path[n].rstrip().endswith(CRITICAL), on_path[n]
            assert not on_path[3].rstrip().endswith(CRITICAL), on_path[3]  # RUN echo final (1.0 s) is not
            assert on_path[2].rstrip().endswith("3.00s " + CRITICAL)
            ends = {len(line.rstrip().removesuffix(CRITICAL).rstrip()) for line in on_path.values()}
            assert len(ends) == 1, on_path  # the durations end in one column
            assert f"{CRITICAL} critical path 3.70s" in str(dag.border_subtitle)
            await pilot.press("q")

    asyncio.run(run())


def test_breakpoint_and_predicted_marks(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path, CHAIN, CHAIN_DOCKERFILE)
        async with app.run_test(size=(120, 40)) as pilot:
            dag = await _settled(pilot, app)
            assert not node_line(dag, digest(2)).startswith(BREAKPOINT)
            await pilot.press("5", "down", "down", "f9", "escape")  # a breakpoint on line 3: RUN echo b
            await pilot.pause(0.1)
            assert node_line(dag, digest(2)).startswith(f"{BREAKPOINT}✔ #3"), node_line(dag, digest(2))
            assert not node_line(dag, digest(1)).startswith(BREAKPOINT)
            app.model.predicted = {digest(3): "instruction changed: 'RUN echo c' → 'RUN echo d'"}  # as watch sets it
            dag.refresh()
            line = node_line(dag, digest(3))
            assert f"{PREDICTED} instruction changed" in line and "0.25s" not in line, line
            await pilot.press("q")

    asyncio.run(run())


def test_80_columns_keeps_the_lanes_and_the_durations(tmp_path: Path) -> None:
    long = [(name + " && " + "x" * 120 if "make" in name else name, ins, d, line) for name, ins, d, line in FORK_MERGE]

    async def run() -> None:
        app = _app(tmp_path, long, FORK_MERGE_DOCKERFILE)
        async with app.run_test(size=(80, 24)) as pilot:
            dag = await _settled(pilot, app)
            assert dag.size.width <= 78
            drawn = lines(dag)
            for row, line in zip(dag.rows, drawn, strict=True):
                assert len(line) == dag.scrollable_content_region.width  # one screen line each: nothing wraps
                assert line[1:].startswith(row.cells.rstrip()[:2 * row.lane]), (row, line)  # lanes left of the node
            make = node_line(dag, digest(2))
            assert make.startswith(" │ ✔ #3 [1/1] RUN make && xxx") and "…" in make
            assert make.rstrip().endswith("3.00s " + CRITICAL), make  # the name is cut, not the duration
            await pilot.press("q")

    asyncio.run(run())


def test_500_vertices_render_and_navigate(tmp_path: Path) -> None:
    async def run() -> None:
        app = _app(tmp_path, big(), "FROM scratch\n")
        async with app.run_test(size=(120, 40)) as pilot:
            dag = await _settled(pilot, app)
            assert len(dag.rows) == 520 and max(row.lane for row in dag.rows) == 0  # one lane, stage after stage
            await pilot.press("home")
            await pilot.pause(0.05)
            assert str(dag.render_line(0).text).startswith(" ▾ stage stage0")
            await pilot.press("end")
            await pilot.pause(0.05)
            last = node_line(dag, digest(499))
            assert last.startswith(" ✔ #500 [25/25] RUN step 19.24") and last.rstrip().endswith(CRITICAL), last
            await pilot.press("z")  # every stage folded: 20 headers
            await pilot.pause(0.05)
            assert len(dag.rows) == 20 and all(not row.vertex for row in dag.rows)
            assert str(dag.render_line(0).text).startswith(" ▸ stage stage0 (25/25)")
            await pilot.press("q")

    asyncio.run(run())
