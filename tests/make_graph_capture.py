"""Makes docs/tui-graph.svg (the TUI's graph of a replayed multi-stage build, with a breakpoint and a predicted
re-run) and docs/inspect-graph.txt (`workbench inspect graph`'s text of the same graph). Run once from the
repository root when the graph's look changes:

    .venv/bin/python tests/make_graph_capture.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.graph_events import digest, events_of  # noqa: E402
from tests.tui_pilot import until  # noqa: E402
from workbench.progress.graph_export import Graph, to_text  # noqa: E402
from workbench.progress.graph_layout import GraphNode  # noqa: E402
from workbench.tui.app import WorkbenchApp  # noqa: E402
from workbench.tui.model import stage_of  # noqa: E402
from workbench.tui.source import ReplaySource  # noqa: E402

DOCKERFILE = """\
FROM python:3.12-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends libpq5
WORKDIR /app

FROM base AS builder
COPY requirements.txt .
RUN pip wheel -r requirements.txt -w /wheels

FROM base AS assets
COPY static/ static/
RUN python -m compileall -q static

FROM base
COPY --from=builder /wheels /wheels
RUN pip install --no-index /wheels/*
COPY --from=assets /app/static static/
COPY . .
"""
STEPS: list[tuple[str, tuple[int, ...], float | None, int]] = [
    ("[base 1/3] FROM docker.io/library/python:3.12-slim", (), None, 1),
    ("[base 2/3] RUN apt-get update && apt-get install -y --no-install-recommends libpq5", (0,), 11.84, 2),
    ("[base 3/3] WORKDIR /app", (1,), 0.02, 3),
    ("[builder 1/2] COPY requirements.txt .", (2,), 0.03, 6),
    ("[builder 2/2] RUN pip wheel -r requirements.txt -w /wheels", (3,), 23.61, 7),
    ("[assets 1/2] COPY static/ static/", (2,), 0.05, 10),
    ("[assets 2/2] RUN python -m compileall -q static", (5,), 1.37, 11),
    ("[stage-3 1/4] COPY --from=builder /wheels /wheels", (2, 4), 0.41, 14),
    ("[stage-3 2/4] RUN pip install --no-index /wheels/*", (7,), 6.12, 15),
    ("[stage-3 3/4] COPY --from=assets /app/static static/", (8, 6), 0.04, 16),
    ("[stage-3 4/4] COPY . .", (9,), 0.08, 17),
]


async def screenshot(folder: Path, out: Path) -> None:
    (folder / "Dockerfile").write_text(DOCKERFILE)
    events = events_of(STEPS)
    source = ReplaySource(events, dockerfile=folder / "Dockerfile")
    source.debuggable = True  # breakpoints can be set (a replay never stops at them)
    app = WorkbenchApp(source, devices=[], clock=lambda: events[-1].ts, remember_theme=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.model.finished is not None)
        await pilot.press("5", *["down"] * 14, "f9", "escape")  # a breakpoint on RUN pip install
        app.model.predicted = {digest(10): "files changed: app.py"}  # as watch mode marks an edit
        await pilot.press("up", "up")
        await pilot.pause(0.3)
        app.save_screenshot(str(out.name), str(out.parent))
        await pilot.press("q")


def text_capture() -> str:
    nodes = [GraphNode(digest(n), stage_of(name), tuple(digest(i) for i in ins), d or 0.0)
             for n, (name, ins, d, _) in enumerate(STEPS)]
    names = {digest(n): name for n, (name, *_) in enumerate(STEPS)}
    timings = {digest(n): "CACHED" if d is None else f"{d:.2f}s" for n, (_, _, d, _) in enumerate(STEPS)}
    return "$ workbench inspect graph .\n" + to_text(Graph(nodes, names, timings))


def main() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs"
    os.environ["WORKBENCH_TUI_STATE"] = os.path.join(tempfile.mkdtemp(), "tui-state.json")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(screenshot(Path(tmp), docs / "tui-graph.svg"))
    (docs / "inspect-graph.txt").write_text(text_capture())
    print(f"wrote {docs / 'tui-graph.svg'} and {docs / 'inspect-graph.txt'}")


if __name__ == "__main__":
    main()
