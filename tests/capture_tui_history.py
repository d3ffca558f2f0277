"""Make docs/tui-history.svg (`H`: the past builds, two marked) and docs/tui-history-compare.svg (`c`: the two
side by side) from three real builds of a small project in a temporary root:

    sh tests/conformance/registry.sh && .venv/bin/python tests/capture_tui_history.py

(Not a test: run it by hand when the history screens change.)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tui_pilot import until  # noqa: E402
from workbench.history.recorder import recording_engine  # noqa: E402
from workbench.progress.events import EventBus  # noqa: E402
from workbench.request import BuildRequest  # noqa: E402
from workbench.tui.app import WorkbenchApp  # noqa: E402
from workbench.tui.screens.history import CompareScreen, HistoryScreen  # noqa: E402
from workbench.tui.source import LiveBuildSource  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCKERFILE = """\
FROM localhost:5055/busybox
WORKDIR /app
COPY requirements.txt .
RUN echo "installing $(cat requirements.txt)" && sleep 1
COPY src/ src/
RUN ls -R src && echo built
"""


def build(ctx: Path, root: Path) -> None:
    recording_engine().build(BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root), EventBus())


async def capture(ctx: Path, root: Path) -> None:
    app = WorkbenchApp(LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=root), watch=False,
                       devices=[], remember_theme=False, theme="dark")
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.model.finished is not None)
        await pilot.press("H")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.rows) == 4)
        await pilot.press("down", "space", "down", "space")
        await pilot.pause(0.3)
        app.save_screenshot("tui-history.svg", str(DOCS))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        await pilot.pause(0.3)
        app.save_screenshot("tui-history-compare.svg", str(DOCS))
        await pilot.press("escape", "escape", "q")


def main() -> int:
    os.environ.setdefault("WORKBENCH_TUI_STATE", os.path.join(tempfile.gettempdir(), "wb-capture-tui.json"))
    with tempfile.TemporaryDirectory() as tmp:
        ctx, root = Path(tmp) / "project", Path(tmp) / "root"
        (ctx / "src").mkdir(parents=True)
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        (ctx / "requirements.txt").write_text("flask==3.0\n")
        (ctx / "src" / "app.py").write_text("print('v1')\n")
        build(ctx, root)
        (ctx / "src" / "app.py").write_text("print('v2')\n")
        build(ctx, root)
        (ctx / "requirements.txt").write_text("flask==3.1\n")
        build(ctx, root)
        asyncio.run(capture(ctx, root))
    print(f"wrote {DOCS / 'tui-history.svg'} and {DOCS / 'tui-history-compare.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
