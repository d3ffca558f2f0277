"""A build that fails before or outside its steps (parse, base image, check error, refused entitlement) shows
in the TUI as a failed node with the error in the logs pane and a mark at its line in the editor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.tui_pilot import until as _until
from workbench.progress.events import BuildFinished, SourceLocation, VertexCompleted, VertexStarted
from workbench.progress.trace import FAILED
from workbench.tui.app import WorkbenchApp
from workbench.tui.model import BUILD_ERROR, BUILD_ERROR_NAME, BuildModel
from workbench.tui.source import LiveBuildSource
from workbench.tui.widgets.dag_view import DagView
from workbench.tui.widgets.editor import DockerfileEditor
from workbench.tui.widgets.log_pane import LogPane
from workbench.tui.widgets.log_view import LogView


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def test_model_gives_an_unreported_error_a_node() -> None:
    load = "internal:[internal] load build definition from Dockerfile"
    model = BuildModel()
    model.apply(VertexStarted(load, load[9:], ts=1.0))
    model.apply(VertexCompleted(load, load[9:], duration=0.01, ts=1.01))
    model.apply(BuildFinished(error="dockerfile parse error on line 2: unknown instruction: RUNN", duration=0.1,
                              source=SourceLocation("Dockerfile", 2, 2), ts=1.1))
    failed = model.first_failed()
    assert failed is not None and failed.id == BUILD_ERROR and failed.name == BUILD_ERROR_NAME
    assert failed.source == SourceLocation("Dockerfile", 2, 2) and "RUNN" in failed.error
    assert failed.log.lines == ["Dockerfile:2", "ERROR: failed to solve: dockerfile parse error on line 2: "
                                "unknown instruction: RUNN"]
    assert model.error_lines() == {1: "ERROR: dockerfile parse error on line 2: unknown instruction: RUNN"}
    assert model.combined[0][0] == failed.number

    refused = BuildModel()  # a step refused before the solve: the node is named after it
    refused.apply(BuildFinished(error="failed to load LLB: network.host is not allowed\nhint: grant it",
                                source=SourceLocation("Dockerfile", 2, 2), step="[2/2] RUN --network=host true"))
    step = refused.first_failed()
    assert step is not None and step.name == "[2/2] RUN --network=host true" and step.stage == "main"
    assert refused.error_lines() == {1: "ERROR: failed to load LLB: network.host is not allowed"}

    canceled = BuildModel()  # a canceled build failed nothing
    canceled.apply(BuildFinished(error="canceled"))
    assert canceled.first_failed() is None and canceled.error_lines() == {}


def _show_failure(tmp_path: Path, dockerfile: str, error: str, line: int) -> None:
    """Build `dockerfile` in the app and check the failure is shown: a failed node, selected, whose log pane
    says `error`, and the editor's mark (and problems list) at 1-based `line`."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False, break_on_error=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            await pilot.pause(0.15)
            assert app.model.finished is not None and error in app.model.finished.error
            failed = app.model.vertices[app.query_one(DagView).selected]
            assert failed.state == FAILED, [(v.name, v.state) for v in app.model.vertices.values()]
            await _until(pilot, lambda: error in str(app.query_one(LogPane).query_one("#log-error").render()), 5)
            if failed.id == BUILD_ERROR:
                view = app.query_one(LogView)
                assert any(error in view.source.line(i) for i in range(len(view.source)))
            assert "1 failed" in str(app.query_one("#status").render())
            await pilot.press("5")
            editor = app.query_one(DockerfileEditor)
            await _until(pilot, lambda: editor.problem_lines.get(line - 1, "").startswith("ERROR: "), 10)
            assert f"line {line}: ERROR: " in str(app.query_one("#problems").render())
            await pilot.press("escape", "q")

    asyncio.run(run())


def test_a_parse_error_shows_as_a_failed_node(tmp_path: Path) -> None:
    _show_failure(tmp_path, "FROM localhost:5055/busybox\nRUNN echo hi\n", "unknown instruction: RUNN", 2)


def test_a_missing_base_image_shows_as_a_failed_node(registry: str, tmp_path: Path) -> None:
    _show_failure(tmp_path, "FROM localhost:5055/nosuch\nRUN echo hi\n", "MANIFEST_UNKNOWN", 1)


def test_a_check_error_shows_as_a_failed_node(registry: str, tmp_path: Path) -> None:
    _show_failure(tmp_path, "# check=error=true\nFROM localhost:5055/busybox as Base\nRUN echo hi\n",
                  "lint violation found for rules: StageNameCasing", 2)


def test_a_refused_entitlement_shows_the_step(registry: str, tmp_path: Path) -> None:
    _show_failure(tmp_path, "FROM localhost:5055/busybox\nRUN --network=host echo hi\n",
                  "network.host is not allowed", 2)
