"""Writes docs/tui-breakpoints.svg (the editor's gutter: ● a breakpoint, ▶ the step paused at) and
docs/tui-help.svg (`?`: the keys, grouped, from the app's bindings), from the tests' recorded sample build.

Run once (no registry or root needed):
    .venv/bin/python -m tests.capture_tui_debugging [OUT_DIR]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from tests.tui_events import DOCKERFILE, sample_events
from tests.tui_pilot import until
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.help import HelpScreen
from workbench.tui.source import ReplaySource
from workbench.tui.widgets.editor import DockerfileEditor


async def capture(tmp: Path, out: Path) -> None:
    dockerfile = tmp / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    app = WorkbenchApp(ReplaySource(sample_events(), dockerfile=dockerfile), theme="dark", devices=[],
                       remember_theme=False, clock=lambda: sample_events()[-1].ts)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.model.finished is not None)
        await pilot.press("5")
        app.query_one(DockerfileEditor).set_debug_marks({2}, {5})  # a breakpoint on line 3, paused at line 6
        await pilot.pause(0.3)
        app.save_screenshot("tui-breakpoints.svg", str(out))
        await pilot.press("escape", "question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause(0.3)
        app.save_screenshot("tui-help.svg", str(out))
        await pilot.press("escape", "q")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs").resolve()
    os.environ.setdefault("WORKBENCH_TUI_STATE", os.path.join(tempfile.gettempdir(), "wb-capture-tui.json"))
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(capture(Path(tmp), out))
    print(out / "tui-breakpoints.svg", out / "tui-help.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
