"""The layers view (`L`) on a real build (Pilot): offered once the build has finished; the layer list (sizes,
lines, steps), the image's efficiency, and the selected layer's changes as a tree with their marks (+ ~ -)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.tui_pilot import until
from workbench.snapshot.scratch import mounts_under
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.layers import LayersScreen
from workbench.tui.source import LiveBuildSource

pytestmark = pytest.mark.real

DOCKERFILE = """\
FROM localhost:5055/busybox
RUN dd if=/dev/zero of=/big bs=1048576 count=10 2>/dev/null && mkdir /data && echo one > /data/notes
RUN rm /big && echo two > /data/notes
"""


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def screen_text(app: Any) -> str:
    """What the terminal shows now."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def test_layers_view_lists_the_layers_and_shows_a_layers_changes(registry: str, root: Path,
                                                                 tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=root)

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(140, 40)) as pilot:
            assert not app.check_action("layers", ())  # not before the build has finished
            await until(pilot, lambda: app.model.finished is not None)
            assert app.model.finished is not None and app.model.finished.error == ""
            await pilot.pause(0.2)
            assert "L" in app.screen.active_bindings and app.check_action("layers", ())
            await pilot.press("L")
            await until(pilot, lambda: isinstance(app.screen, LayersScreen) and app.screen.report is not None)
            screen = app.screen
            assert isinstance(screen, LayersScreen) and screen.report is not None
            await pilot.pause(0.1)
            text = screen_text(app)
            assert "layers of Dockerfile" in text
            assert "efficiency " in text and "10.5 MB of" in text
            assert "FROM localhost:5055/busybox" in text  # the base layer, first and selected
            rows = text.splitlines()
            # the dd layer's 10 MB are wasted later (`!`), the rm layer's bytes are not
            assert any("10.5 MB ! L2" in row and "RUN dd if=/dev/zero" in row for row in rows), text
            assert any("  L3" in row and "RUN rm /big" in row and "!" not in row.split("L3")[0] for row in rows)
            layers = len(screen.report.layers)
            await pilot.press("down")  # the dd layer: what it added
            await pilot.pause(0.1)
            text = screen_text(app)
            assert f"layer {layers - 1} · line 2 · 10.5 MB · 3 added, 0 changed, 0 removed" in text, text
            assert "+ big  10.5 MB" in text and "+ data/" in text and "+ notes  4 B" in text
            assert "wasted 10.5 MB /big (removed by layer" in text
            await pilot.press("down")  # the rm layer: a removal and a change, told by their marks
            await pilot.pause(0.1)
            text = screen_text(app)
            assert f"layer {layers} · line 3" in text and "0 added, 1 changed, 1 removed" in text, text
            assert "- big  10.5 MB" in text and "~ notes  4 B" in text
            assert "data/" in text  # the directory on the way to the change, unmarked
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert not isinstance(app.screen, LayersScreen)
            app.stop()
        assert not mounts_under(root / "tmp")

    asyncio.run(run())
