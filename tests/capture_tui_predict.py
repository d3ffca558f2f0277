"""Writes docs/tui-predict.svg: the TUI after an edit, showing which steps the next build will re-run and why.

Run once (as root, with the tests' registry up: `sh tests/conformance/registry.sh`):
    .venv/bin/python -m tests.capture_tui_predict [OUT.svg]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from tests.tui_pilot import until
from workbench.tui.app import WorkbenchApp
from workbench.tui.source import LiveBuildSource

DOCKERFILE = """FROM localhost:5055/busybox
ARG GREETING=hello
RUN echo $GREETING > /greeting
COPY requirements.txt /app/
RUN wc -l /app/requirements.txt > /app/count
COPY app.py /app/
"""


async def capture(tmp: Path, out: Path) -> None:
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "requirements.txt").write_text("flask\n")
    (ctx / "app.py").write_text("print('hello')\n")
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp / "root")
    app = WorkbenchApp(source, theme="dark", watch=True, devices=[], remember_theme=False,
                       clock=lambda: 0.0)
    async with app.run_test(size=(120, 32)) as pilot:
        await until(pilot, lambda: app.model.finished is not None)
        await pilot.pause(0.5)  # the watcher is up
        await pilot.press("w")  # watch off: the prediction stays on screen until `r`
        (ctx / "requirements.txt").write_text("flask\ngunicorn\n")
        await until(pilot, lambda: app.model.predicted)
        await pilot.pause(0.3)
        app.save_screenshot(out.name, str(out.parent))
        await pilot.press("q")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/tui-predict.svg").resolve()
    os.environ.setdefault("WORKBENCH_TUI_STATE", os.path.join(tempfile.gettempdir(), "wb-capture-tui.json"))
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(capture(Path(tmp), out))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
