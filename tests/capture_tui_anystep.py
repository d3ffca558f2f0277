"""Writes docs/tui-anystep.svg: after an edit and a rebuild, `d` on a step compares its result in the build
before with this build's ("what did my edit change in /app?").

Run once (as root, with the tests' registry up: `sh tests/conformance/registry.sh`):
    .venv/bin/python -m tests.capture_tui_anystep [OUT.svg]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from tests.tui_pilot import until
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.diff import DiffScreen
from workbench.tui.source import LiveBuildSource
from workbench.tui.widgets.dag_view import DagView

DOCKERFILE = """FROM localhost:5055/busybox
WORKDIR /app
COPY requirements.txt app.py /app/
RUN wc -l requirements.txt > /app/count
"""


async def capture(tmp: Path, out: Path) -> None:
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "requirements.txt").write_text("flask\n")
    (ctx / "app.py").write_text("print('hello')\n")
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp / "root")
    app = WorkbenchApp(source, theme="dark", watch=False, devices=[], remember_theme=False, clock=lambda: 0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.model.finished is not None)
        (ctx / "requirements.txt").write_text("flask\ngunicorn\n")
        await pilot.press("r")
        await until(pilot, lambda: app.generation == 2 and app.model.finished is not None)
        copy = next(v for v in app.model.vertices.values() if "COPY" in v.name)
        app.query_one(DagView).select(copy.id)
        await pilot.pause(0.2)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen) and bool(app.screen.lines))
        await pilot.pause(0.3)
        app.save_screenshot(out.name, str(out.parent))
        await pilot.press("escape", "q")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/tui-anystep.svg").resolve()
    os.environ.setdefault("WORKBENCH_TUI_STATE", os.path.join(tempfile.gettempdir(), "wb-capture-tui.json"))
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(capture(Path(tmp), out))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
