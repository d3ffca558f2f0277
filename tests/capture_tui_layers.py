"""Writes docs/tui-layers.svg (the layers view, `L`, on the dd layer of an image with known waste) and
docs/inspect-layers.txt (`workbench inspect layers CONTEXT` on the same Dockerfile).

Run once (as root, with the tests' registry up: `sh tests/conformance/registry.sh`):
    .venv/bin/python -m tests.capture_tui_layers [OUT.svg [OUT.txt]]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.tui_pilot import until
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.layers import LayersScreen
from workbench.tui.source import LiveBuildSource

DOCKERFILE = """FROM localhost:5055/busybox
RUN dd if=/dev/zero of=/big bs=1048576 count=10 2>/dev/null && mkdir /app && echo 1 > /app/version
RUN rm /big && echo 2 > /app/version
COPY app.py /app/
"""


def context(tmp: Path) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app.py").write_text("print('hello')\n")
    return ctx


async def capture(ctx: Path, root: Path, out: Path) -> None:
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=root)
    app = WorkbenchApp(source, theme="dark", watch=False, devices=[], remember_theme=False, clock=lambda: 0.0)
    async with app.run_test(size=(120, 32)) as pilot:
        await until(pilot, lambda: app.model.finished is not None)
        await pilot.pause(0.2)
        await pilot.press("L")
        await until(pilot, lambda: isinstance(app.screen, LayersScreen) and app.screen.report is not None)
        await pilot.press("down")
        await pilot.pause(0.3)
        app.save_screenshot(out.name, str(out.parent))
        await pilot.press("escape", "q")


def main() -> int:
    svg = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/tui-layers.svg").resolve()
    txt = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/inspect-layers.txt").resolve()
    os.environ.setdefault("WORKBENCH_TUI_STATE", os.path.join(tempfile.gettempdir(), "wb-capture-tui.json"))
    with tempfile.TemporaryDirectory() as tmp:
        ctx, root = context(Path(tmp)), Path(tmp) / "root"
        asyncio.run(capture(ctx, root, svg))
        workbench = Path(sys.executable).parent / "workbench"
        proc = subprocess.run([str(workbench), "inspect", "layers", "ctx", "--root", str(root)], cwd=tmp,
                              capture_output=True, text=True, check=True)
        txt.write_text("$ workbench inspect layers ctx\n" + proc.stdout)
    print(svg, txt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
