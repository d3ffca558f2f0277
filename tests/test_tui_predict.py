"""The TUI predicts the next build when an input changes (issue 18 item 11): the steps that will re-run marked
on the graph on screen (`BuildModel.predicted`, with why), `next build: N steps re-run` in the status bar,
and the build held to the prediction when it ends."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from textual.widgets import Static

from tests.tui_pilot import until
from workbench.tui.app import WorkbenchApp
from workbench.tui.source import LiveBuildSource

DOCKERFILE = """FROM localhost:5055/busybox
RUN echo first > /first
COPY a.txt /a.txt
RUN cat /a.txt
"""


def status(app: WorkbenchApp) -> str:
    return str(app.query_one("#status", Static).render())


def test_an_edit_is_predicted_on_the_graph_and_checked_after_the_build(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("one\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")

    async def run() -> None:
        app = WorkbenchApp(source, watch=True, devices=[], remember_theme=False, break_on_error=False)
        async with app.run_test(size=(160, 40)) as pilot:
            try:
                await until(pilot, lambda: app.model.finished is not None)
                await pilot.pause(0.5)  # the watcher is up
                shown = app.model
                ids = {v.name: v.id for v in shown.vertices.values()}

                # watch on: the edit is predicted on the graph on screen, then the build runs and keeps to it
                (ctx / "a.txt").write_text("two\n")
                await until(pilot, lambda: app.generation == 2 and app.model.finished is not None)
                await pilot.pause(0.05)
                assert shown.prediction_note == "next build: 2 steps re-run"
                assert set(shown.predicted) == {ids["[3/4] COPY a.txt /a.txt"], ids["[4/4] RUN cat /a.txt"]}
                assert shown.predicted[ids["[3/4] COPY a.txt /a.txt"]].startswith("a.txt changed (")
                assert shown.predicted[ids["[4/4] RUN cat /a.txt"]] == "parent step missed: [3/4] COPY a.txt /a.txt"
                assert app.model.predicted == {}  # the build that began starts without marks
                assert app.model.prediction_note == "prediction held"
                assert "prediction held" in status(app)

                # watch off: the prediction stays on the graph until `r` builds
                await pilot.press("w")
                (ctx / "Dockerfile").write_text(DOCKERFILE.replace("cat /a.txt", "cat /a.txt /first"))
                await until(pilot, lambda: app.model.predicted)
                assert app.generation == 2
                rerun = {v.name: v.id for v in app.model.vertices.values()}["[4/4] RUN cat /a.txt"]
                assert app.model.predicted == {
                    rerun: "instruction changed: RUN cat /a.txt → RUN cat /a.txt /first"}  # found by its line
                await until(pilot, lambda: "next build: 1 step re-run" in status(app))
                await pilot.press("r")
                await until(pilot, lambda: app.generation == 3 and app.model.finished is not None)
                await pilot.pause(0.05)
                assert app.model.prediction_note == "prediction held" and "prediction held" in status(app)

                # no-cache turned on: predicted again, every RUN and COPY re-runs (the FROM stays cached, as BuildKit)
                (ctx / "a.txt").write_text("three\n")
                await until(pilot, lambda: app.model.predicted)
                await pilot.press("n")
                await until(pilot, lambda: "next build: 3 steps re-run" in status(app))
                assert set(app.model.predicted.values()) == {"cache disabled (--no-cache)"}
                await pilot.press("n")
                await until(pilot, lambda: "next build: 2 steps re-run" in status(app))

                # a wrong prediction is said, in the step's log (this one said every step was cached)
                assert app._expected is not None
                app._expected = replace(app._expected, steps=[replace(s, reason=None) for s in app._expected.steps])
                await pilot.press("r")
                await until(pilot, lambda: app.generation == 4 and app.model.finished is not None)
                await pilot.pause(0.05)
                assert "prediction wrong for 2 steps (see the logs)" in status(app)
                cat = next(v for v in app.model.vertices.values() if v.name == "[4/4] RUN cat /a.txt /first")
                assert cat.log.lines[-1] == "WARNING: prediction: [4/4] RUN cat /a.txt /first: predicted to " \
                                            "come from the cache, but it ran"
                assert any("WARNING: prediction:" in line for _, line in app.model.combined)
                await pilot.press("q")
            finally:
                app.stop()  # a failed assertion must not leave the watcher running

    asyncio.run(run())


def test_predicted_steps_are_found_on_screen_by_name_then_instruction_then_line() -> None:
    from workbench.progress.events import SourceLocation, VertexCached
    from workbench.solver.predict import PredictedStep, Prediction
    from workbench.tui.model import BuildModel
    from workbench.tui.predict import on_screen

    def at(line: int) -> SourceLocation:
        return SourceLocation("Dockerfile", line, line)

    model = BuildModel()
    for n, name in enumerate(["[1/3] FROM base", "[2/3] RUN a", "[3/3] RUN b"], 1):
        model.apply(VertexCached(f"old{n}", name, source=at(n)))
    missed = "parent step missed: [2/4] RUN inserted"
    inserted = Prediction([PredictedStep("new1", "[1/4] FROM base", at(1), "k1", None),
                           PredictedStep("new2", "[2/4] RUN inserted", at(2), "k2", "never built before"),
                           PredictedStep("new3", "[3/4] RUN a", at(3), "k3", missed),
                           PredictedStep("new4", "[4/4] RUN b", at(4), "k4", "parent step missed: [3/4] RUN a")])
    shown = on_screen(inserted, model)  # the numbers and lines after it shift: found by instruction
    assert shown.predicted == {"old2": missed, "old3": "parent step missed: [3/4] RUN a"}
    assert [s.name for s in shown.new] == ["[2/4] RUN inserted"]
    assert shown.note() == "next build: 3 steps re-run"
    assert "new: [2/4] RUN inserted: never built before" in shown.message()

    edited = Prediction([PredictedStep("new1", "[1/3] FROM base", at(1), "k1", None),
                         PredictedStep("new2", "[2/3] RUN a", at(2), "k2", None),
                         PredictedStep("new3", "[3/3] RUN b2", at(3), "k3", "instruction changed: RUN b → RUN b2")])
    shown = on_screen(edited, model)  # found by its line
    assert shown.predicted == {"old3": "instruction changed: RUN b → RUN b2"} and shown.new == []
    assert shown.note() == "next build: 1 step re-run"
