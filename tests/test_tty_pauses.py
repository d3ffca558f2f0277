"""`--progress tty` leaves a debugger's pauses out of its timers and shows them apart (issue 18), as the plain
printer and the TUI do."""

from __future__ import annotations

import io
import re

from workbench.progress.events import (
    BuildFinished,
    DebugPaused,
    DebugResumed,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexStarted,
)
from workbench.progress.tty import TtyPrinter

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUN = "[2/2] RUN pip install"


def _frames(text: str) -> list[list[str]]:
    """Each frame (between hide-cursor and show-cursor) as its visible lines, right-trimmed."""
    return [[line.rstrip() for line in ANSI.sub("", f.split("\x1b[?25h")[0]).splitlines()]
            for f in text.split("\x1b[?25l")[1:]]


def test_tty_timers_leave_a_pause_out_and_show_it_apart() -> None:
    out = io.StringIO()
    clock = [100.0]
    p = TtyPrinter(out, width=72, height=20, live=False, clock=lambda: clock[0])
    src = SourceLocation("Dockerfile", 2, 2)
    p(VertexCached("v0", "[1/2] FROM localhost:5055/busybox", ts=100.0))
    p(VertexStarted("v1", RUN, source=src, ts=100.0))
    p(DebugPaused("v1", RUN, "breakpoint", source=src, ts=100.5))
    clock[0] = 130.5  # held 30 s at the breakpoint
    p.render()
    held = _frames(out.getvalue())[-1]
    assert held[0] == "[+] Building 0.5s (1/2) (paused 30s)", held
    assert held[2].startswith(f" => {RUN}") and held[2].endswith("(paused 30s) 0.5s"), held

    p(DebugResumed("v1", "continue", ts=140.5))
    p(VertexCompleted("v1", RUN, duration=1.0, paused=40.0, ts=141.5))
    p(BuildFinished(duration=1.5, ts=141.5))
    final = _frames(out.getvalue())[-1]
    assert final[0] == "[+] Building 1.5s (2/2) FINISHED (paused 40s)", final
    assert final[2].startswith(f" => {RUN}") and final[2].endswith("(paused 40s) 1.0s"), final
    assert len(final[2]) == 71 and final[1].endswith(" 0.0s")  # the timers stay aligned


def test_tty_without_a_debugger_is_unchanged() -> None:
    out = io.StringIO()
    clock = [0.0]
    p = TtyPrinter(out, width=60, height=10, live=False, clock=lambda: clock[0])
    p(VertexStarted("a", "[1/1] RUN x", ts=0.0))
    p(VertexCompleted("a", "[1/1] RUN x", duration=0.5, ts=0.5))
    p(BuildFinished(duration=0.5, ts=0.5))
    header, line = _frames(out.getvalue())[-1]
    assert header == "[+] Building 0.5s (1/1) FINISHED"
    assert re.fullmatch(r" => \[1/1\] RUN x +0\.5s", line), line
