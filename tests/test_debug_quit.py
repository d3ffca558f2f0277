"""Leaving the TUI at a pause (issue 18): the step that did not run is canceled, not failed, in the TUI's model
(abort) and in the recorded history (quit), as the REPL records it (tests/test_debug_honesty.py)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from tests.tui_pilot import until
from workbench.history.steps import fold
from workbench.history.store import list_sessions, load_session
from workbench.progress.trace import CANCELED, FAILED

DOCKERFILE = "FROM localhost:5055/busybox\nRUN echo one > /one\nRUN echo two > /two\nRUN echo three\n"


@pytest.mark.real
def test_aborting_or_quitting_the_tui_at_a_pause_cancels_the_unrun_step(registry: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.source import LiveBuildSource

    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    root = tmp_path / "root"
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=root)
    app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)

    def unrun() -> object:
        return next(v for v in app.model.vertices.values() if "RUN echo three" in v.name)

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("5", "down", "down", "down", "f9", "escape", "r")  # break on line 4
            await until(pilot, lambda: app.pause is not None and app.generation == 2)
            await pilot.press("f8")  # abort at the pause (A)
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.pause(0.2)
            assert unrun().state == CANCELED, unrun().state  # type: ignore[attr-defined]
            assert not any(v.state == FAILED for v in app.model.vertices.values())
            status = str(app.query_one("#status").render())
            assert "build #2 aborted after" in status and "1 canceled" in status and "failed" not in status, status

            await pilot.press("r")
            await until(pilot, lambda: app.pause is not None and app.generation == 3)
            await pilot.press("q")  # quit at the pause
        app.runner.cancel(wait=30)  # the build winds down and its session is recorded

    asyncio.run(run())
    newest = load_session(list_sessions(root / "history")[0].path)
    steps = fold(newest.events)
    step = next(s for s in steps.steps if "RUN echo three" in s.name)
    assert step.state == CANCELED, (step.state, step.error)
    assert steps.counts["failed"] == 0
    show = subprocess.run([*WORKBENCH, "history", "show", "^0", "--root", str(root)], capture_output=True,
                          text=True, timeout=120)
    assert show.returncode == 0 and "0 failed" in show.stdout, show.stdout + show.stderr
