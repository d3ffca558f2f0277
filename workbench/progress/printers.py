"""Progress views of the event stream, as BuildKit's `progressui`: `plain`, `tty` (live redraw) and `rawjson`.

`plain` and `tty` follow `util/progress/progressui/printer.go` and `display.go` line for line where they can;
`rawjson` writes one `client.SolveStatus` JSON object per event, as `buildctl --progress rawjson` does, with
workbench's own facts (cache-miss reason, cache key, Dockerfile location) under a `workbench` key. Each view is a
module of its own; this one picks the view for `--progress MODE`.
"""

from __future__ import annotations

import sys
from typing import TextIO

from workbench.progress.plain import PlainPrinter
from workbench.progress.rawjson import RawJsonPrinter
from workbench.progress.tty import TtyPrinter

Printer = PlainPrinter | TtyPrinter | RawJsonPrinter


def make_printer(mode: str, out: TextIO | None = None) -> Printer:
    """The view for `--progress MODE`; `auto` is the live tty view only when the stream is a terminal."""
    if mode == "auto":
        mode = "tty" if (out or sys.stderr).isatty() else "plain"
    if mode == "plain":
        return PlainPrinter(out)
    if mode == "tty":
        return TtyPrinter(out)
    if mode == "rawjson":
        return RawJsonPrinter(out)
    raise ValueError(f"unknown progress mode {mode!r}: use auto, plain, tty or rawjson")
