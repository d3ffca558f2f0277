"""`--progress tty`: the live view of `docker buildx build` on a terminal (progressui/display.go)."""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from workbench.progress.events import BuildFinished, Event, VertexCompleted, VertexFailed, VertexLog
from workbench.progress.logclip import LogClipper
from workbench.progress.textview import RESET, LineStep, amount, error_logs, warning_summary
from workbench.progress.trace import CACHED, CANCELED, FAILED, Trace, paused_label

TERM_HEIGHT = 6
"""Log lines shown under a running step in the tty view (BuildKit's termHeight; BUILDKIT_TTY_LOG_LINES)."""
TERM_PAD = 10

_ESC = "\x1b["
_HIDE, _SHOW, _FAINT = _ESC + "?25l", _ESC + "?25h", _ESC + "2m"
_BLUE, _YELLOW, _RED = _ESC + "34m", _ESC + "33m", _ESC + "31m"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


class _Term:
    """The last lines of a running step's output, as the tty view's small vt100 shows them (CR overwrites)."""

    def __init__(self, height: int) -> None:
        self.rows: deque[str] = deque(maxlen=height)
        self.line = ""
        self.height = height
        self.bytes = 0
        self.shown = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        text = _ANSI.sub("", data.decode(errors="replace")).replace("\t", "    ")
        for i, part in enumerate(text.split("\n")):
            if i:
                self.rows.append(self.line)
                self.line = ""
            for j, seg in enumerate(part.split("\r")):
                self.line = seg + self.line[len(seg):] if j else self.line + seg
            self.line = self.line[-8192:]  # a line with no end is shown by its tail anyway

    def content(self, width: int) -> list[str]:
        width = max(width, 1)
        rows: list[str] = []
        for row in [*self.rows, self.line]:
            row = "".join(c for c in row if c.isprintable())
            rows += [row[i:i + width] for i in range(0, len(row), width)] or [""]
        return [r for r in rows[-self.height:] if r.strip()]


@dataclass
class TtyStep(LineStep):
    """A step with the small terminal that shows its last lines while it runs."""

    term: _Term | None = field(default=None, repr=False)


@dataclass
class _Job:
    name: str
    start: float | None
    stop: float | None
    status: str = ""
    error: bool = False
    canceled: bool = False
    vertex: TtyStep | None = None
    show_term: bool = False

    @property
    def completed(self) -> bool:
        return self.stop is not None


def _wrap_height(jobs: list[_Job], limit: int) -> list[_Job]:
    """Keep the last `limit` lines, moving unfinished jobs that would scroll away into view (display.go)."""
    if limit < 0:
        return []
    if len(jobs) <= limit:
        return list(jobs)
    wrapped = jobs[len(jobs) - limit:]
    invisible = [j for j in jobs[:len(jobs) - limit] if not j.completed]
    if invisible:
        left = len(invisible)
        rewrapped = []
        for j in wrapped:
            if not j.completed or left <= 0:
                rewrapped.append(j)
            left -= 1
        free = len(wrapped) - len(rewrapped)
        wrapped = invisible[len(invisible) - free:] + rewrapped
    return wrapped


def _term_weight(j: _Job) -> int:
    term = j.vertex.term if j.vertex else None
    return term.bytes + term.shown * 50 if term else 0


def _align(left: str, right: str, width: int) -> str:
    return f"{left:<{max(width - len(right) - 1, 0)}} {right}"


class TtyPrinter:
    """The live view of `docker buildx build` on a terminal: redrawn in place about ten times a second.

    `[+] Building 3.2s (5/9)`, then a line per step (`CACHED`/`ERROR` prefixes, times on the right), its
    statuses (`=> => sha256:… 1.20MB / 3.40MB`), and the last six log lines of running steps; the final frame
    at BuildFinished says FINISHED, then come the failed steps' logs and the warnings (progressui/display.go).
    """

    def __init__(self, out: TextIO | None = None, *, width: int | None = None, height: int | None = None,
                 interval: float = 0.1, live: bool = True, clock: Callable[[], float] = time.time,
                 phase: str = "Building") -> None:
        self.out = out or sys.stderr
        self.width, self.height = width, height
        self.interval, self.live, self.clock, self.phase = interval, live, clock, phase
        term_lines = os.environ.get("BUILDKIT_TTY_LOG_LINES", "")
        self.term_height = int(term_lines) if term_lines.isdigit() and int(term_lines) > 0 else TERM_HEIGHT
        self.trace = Trace(self._step)
        self.clip = LogClipper()
        colors = not os.environ.get("NO_COLOR")
        self.color_run, self.color_cancel, self.color_error = (_BLUE, _YELLOW, _RED) if colors else ("", "", "")
        self.line_count = 0
        self.repeated = False
        self.last_render = 0.0
        self.finished = False
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    # The public entry points take the lock; everything below them assumes it is held.

    def __call__(self, ev: Event) -> None:
        with self.lock:
            if self.finished:
                return
            self._apply(ev)
            if isinstance(ev, BuildFinished):
                self._finish(ev.ts)
                return
            if self.live and self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="progress-tty", daemon=True)
                self.thread.start()
            now = self.clock()
            if now - self.last_render >= self.interval:
                self._render(now, final=False)

    def _step(self, vertex: str, name: str, number: int) -> TtyStep:
        return TtyStep(vertex, name, number, term=_Term(self.term_height))

    def _apply(self, ev: Event) -> None:
        for v in self.trace.apply(ev):
            if isinstance(ev, VertexLog):
                data = self.clip(ev.vertex, ev.stream, ev.data)
                if v.term is not None:
                    v.term.write(data)
                v.log_lines(ev, data)  # kept for the failed steps' logs after the build
            elif isinstance(ev, VertexCompleted | VertexFailed | BuildFinished):
                v.flush()

    def render(self) -> None:
        """Draw one frame now (the refresh thread calls this)."""
        with self.lock:
            if not self.finished:
                self._render(self.clock(), final=False)

    def close(self) -> None:
        """Stop redrawing and draw the final frame (BuildFinished does this; for an interrupted build)."""
        with self.lock:
            if not self.finished:
                self._finish(self.clock())

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.render()
            except (OSError, ValueError):  # the stream went away
                return

    def _finish(self, now: float) -> None:
        self.finished = True
        self.stop.set()
        self._render(now, final=True)
        yellow = self.color_cancel
        self.out.write(error_logs(self.trace.steps) + warning_summary(self.trace.warnings, yellow))
        self.out.flush()

    def _size(self) -> tuple[int, int]:
        width, height = self.width, self.height
        if width is None or height is None:
            try:
                size = os.get_terminal_size(self.out.fileno())
            except (AttributeError, OSError, ValueError):
                size = shutil.get_terminal_size((80, 10))
            width = width or size.columns or 80
            height = height or size.lines or 10
        return width, height

    def _jobs(self) -> list[_Job]:
        jobs: list[_Job] = []
        for v in self.trace.steps:
            if v.started is None:
                continue
            name = v.name.replace("\t", " ")
            job = _Job(name, v.started, v.completed, vertex=v)
            if v.state == CANCELED:
                job.canceled, job.name = True, "CANCELED " + job.name
            elif v.state == FAILED:
                job.error, job.name = True, "ERROR " + job.name
            if v.state == CACHED:
                job.name = "CACHED " + job.name
            jobs.append(job)
            for s in v.statuses.values():
                jobs.append(_Job("=> " + s.id, s.started, s.completed, status=amount(s)))
            for msg in v.warnings:
                jobs.append(_Job("WARN: " + msg, v.started, v.completed, canceled=True))
        return jobs

    def _setup_terminals(self, jobs: list[_Job], height: int, final: bool) -> list[_Job]:
        candidates = [j for j in jobs if j.vertex and j.vertex.term and j.vertex.term.bytes and not j.completed]
        in_use = sum(1 for j in jobs if not j.completed)
        candidates.sort(key=lambda j: -_term_weight(j))
        free = height - 2 - in_use
        limit = self.term_height + 3
        hide = 0
        for j in candidates:
            if free <= limit:
                break
            j.show_term = True
            hide += self.term_height
            free -= limit
        return jobs if final else _wrap_height(jobs, height - 2 - hide)

    def _frame(self, now: float, final: bool) -> str:
        width, height = self._size()
        jobs = self._setup_terminals(self._jobs(), height, final)
        trace = self.trace
        w = [f"{_ESC}{self.line_count + 1}A" + ("" if self.repeated else f"{_ESC}1B") + f"{_ESC}0G", _HIDE]
        self.repeated = True
        total = len(trace.steps)
        done = sum(1 for v in trace.steps if v.completed is not None)
        status = "FINISHED" if final and done and done == total else ""
        start = trace.start if trace.start is not None else now
        held = trace.paused_for(now)  # a debugger's pauses are not build time: told apart
        head = f"[+] {self.phase} {now - start - held:.1f}s ({done}/{total})"
        head += (f" {status}" if status else "") + (f" ({paused_label(held)})" if held else "")
        header = _align(head, "", width)
        w.append(header[:width] + "\n")
        count = 0
        for j in jobs:
            if j.start is None:
                continue
            end = j.stop if j.stop is not None else now
            held = j.vertex.paused_for(end) if j.vertex is not None else 0.0
            dt = end - j.start - held  # run time: the timer stands still while the debugger holds the step
            timer = (f" ({paused_label(held)})" if held else "") + f" {0.0 if dt < 0.05 else dt:3.1f}s\n"
            pfx = " => "
            left = width - len(pfx) - len(timer) - 1
            show_status = bool(j.status) and left + len(j.status) > 20
            if show_status:
                left -= len(j.status) + 1
            if left < 12:  # too narrow to show this line
                continue
            line = _align(pfx + j.name[:left] + (" " + j.status if show_status else ""), timer, width)
            if j.completed:
                color = self.color_cancel if j.canceled else self.color_error if j.error else self.color_run
                if color:
                    line = color + line + RESET
            w.append(line)
            count += 1
            if j.show_term and j.vertex and j.vertex.term:
                for row in j.vertex.term.content(width - TERM_PAD):
                    w.append(f"{_FAINT} => => # {row}\n{RESET}")
                    count += 1
                j.vertex.term.shown += 1
        if self.line_count > count:
            diff = self.line_count - count
            w.append((" " * width + "\n") * diff + f"{_ESC}{diff}A{_ESC}0G")
        self.line_count = count
        w.append(_SHOW)
        return "".join(w)

    def _render(self, now: float, final: bool) -> None:
        self.last_render = now
        self.out.write(self._frame(now, final))
        self.out.flush()
