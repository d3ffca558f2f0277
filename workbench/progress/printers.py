"""Progress views of the event stream, as BuildKit's `progressui`: `plain`, `tty` (live redraw) and `rawjson`.

`plain` and `tty` follow `util/progress/progressui/printer.go` and `display.go` line for line where they can;
`rawjson` writes one `client.SolveStatus` JSON object per event, as `buildctl --progress rawjson` does, with
workbench's own facts (cache-miss reason, cache key, Dockerfile location) under a `workbench` key.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    DeviceGrant,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexEvent,
    VertexFailed,
    VertexLog,
    VertexPlanned,
    VertexStarted,
    VertexStatus,
)
from workbench.progress.text import printable

DEFAULT_LOG_LIMIT = 2 * 1024 * 1024
"""BUILDKIT_STEP_LOG_MAX_SIZE's default: a step's stdout (and, apart, its stderr) is clipped past 2 MiB."""
ERROR_LOG_LINES = 10
"""How many of a failed step's last log lines the plain view repeats after the build (BuildKit's logsBuffer)."""
TERM_HEIGHT = 6
"""Log lines shown under a running step in the tty view (BuildKit's termHeight; BUILDKIT_TTY_LOG_LINES)."""
TERM_PAD = 10

_ESC = "\x1b["
_HIDE, _SHOW, _RESET, _FAINT = _ESC + "?25l", _ESC + "?25h", _ESC + "0m", _ESC + "2m"
_BLUE, _YELLOW, _RED = _ESC + "34m", _ESC + "33m", _ESC + "31m"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


# -- formatting shared by the views ------------------------------------------------------------------------------


def format_bytes(n: int) -> str:
    """`fmt.Sprintf("%.2f", units.Bytes(n))`: decimal units; under 1000 the plain integer (BuildKit v0.20's
    units drops the precision there: `2B`, not `02B`)."""
    if -1000 < n < 1000:
        return f"{n}B"
    value, i = float(n), 0
    while abs(value) >= 1000 and i < 5:
        value, i = value / 1000, i + 1
    return f"{value:.2f}{('kB', 'MB', 'GB', 'TB', 'PB', 'EB')[i - 1]}"


def format_binary_size(n: int) -> str:
    """`fmt.Sprintf("%#g", units.Bytes(n))` as the log clip message shows it: `2MiB`, `200KiB`, `1.5GiB`."""
    if n < 1024:
        return f"{n}B"
    value, i = float(n), 0
    while value >= 1024 and i < 6:
        value, i = value / 1024, i + 1
    text = repr(value)
    return (text[:-2] if text.endswith(".0") else text) + ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")[i - 1]


def rfc3339(ts: float) -> str:
    """A wall-clock time as Go's JSON writes a UTC time.Time: RFC 3339, fraction to the ns, trailing zeros cut."""
    micros = round(ts * 1_000_000)
    sec, frac = divmod(micros, 1_000_000)
    digits = f"{frac * 1000:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ("." + digits if digits else "") + "Z"


def _log_stamp(seconds: float) -> str:
    """A log line's offset from its step's start: 3 decimals under 10s, 2 under 100s, else 1 (display.go)."""
    seconds = max(seconds, 0.0)
    return f"{seconds:.{3 if seconds < 10 else 2 if seconds < 100 else 1}f}"


def device_lines(ev: DeviceGrant) -> list[str]:
    """`device vendor.com/gpu=0 granted: auto-allow (annotation)`, one line per device of a grant/denial."""
    verdict = "granted" if ev.granted else "denied"
    out = []
    for name in ev.devices or (ev.request,):
        asked = f" (requested as {ev.request})" if name != ev.request else ""
        out.append(f"device {name}{asked} {verdict}: {ev.how}")
    return out


def _is_canceled(error: str) -> bool:
    return error.endswith("canceled")


def log_limit() -> int:
    """The per-step, per-stream log size limit: BUILDKIT_STEP_LOG_MAX_SIZE, or 2 MiB; -1 turns clipping off."""
    try:
        return int(os.environ.get("BUILDKIT_STEP_LOG_MAX_SIZE", ""))
    except ValueError:
        return DEFAULT_LOG_LIMIT


class LogClipper:
    """BuildKit's step log size clip (`util/progress/logs`), applied in the views since there is no daemon."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = log_limit() if limit is None else limit
        self.sizes: dict[tuple[str, int], int] = {}
        self.clipping: set[tuple[str, int]] = set()

    def __call__(self, vertex: str, stream: int, data: bytes) -> bytes:
        if self.limit < 0:
            return data
        key = (vertex, stream)
        old = self.sizes.get(key, 0)
        self.sizes[key] = old + len(data)
        keep = 0 if self.limit < old else min(len(data), self.limit - old)
        out = data[:keep]
        if key in self.clipping and keep == len(data):
            self.clipping.discard(key)
        if key not in self.clipping and keep != len(data):
            out += f"\n[output clipped, log limit {format_binary_size(self.limit)} reached]\n".encode()
            self.clipping.add(key)
        return out


# -- the state of a build, as the text views see it --------------------------------------------------------------


@dataclass
class _Status:
    id: str
    started: float
    timestamp: float
    current: int = 0
    total: int = 0
    completed: float | None = None

    def amount(self) -> str:
        if self.total:
            return f"{format_bytes(self.current)} / {format_bytes(self.total)}"
        return format_bytes(self.current) if self.current else ""


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
class _Vertex:
    digest: str
    name: str
    index: int
    inputs: tuple[str, ...] = ()
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""
    statuses: dict[str, _Status] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    logs: deque[str] = field(default_factory=deque)
    """Formatted log lines ("0.123 text") kept for the error summary."""
    partial: dict[int, tuple[float, bytes]] = field(default_factory=dict)
    """Per stream, an unfinished line and when its first bytes came."""
    term: _Term | None = None

    def log_lines(self, ev: VertexLog, data: bytes) -> list[str]:
        """Complete lines of `data` (joined to what was pending), each stamped with its first bytes' time."""
        ts0, pending = self.partial.pop(ev.stream, (ev.ts, b""))
        *lines, rest = (pending + data).split(b"\n")
        if rest:
            self.partial[ev.stream] = (ts0 if not lines else ev.ts, rest)
        out = []
        for i, line in enumerate(lines):
            at = ts0 if i == 0 and pending else ev.ts
            out.append(self._stamp(at, line))
        return out

    def flush(self) -> list[str]:
        out = [self._stamp(ts, rest) for ts, rest in self.partial.values()]
        self.partial.clear()
        return out

    def _stamp(self, ts: float, line: bytes) -> str:
        text = f"{_log_stamp(ts - (self.started if self.started is not None else ts))} {line.decode(errors='replace')}"
        self.logs.append(text)
        return text


class _Trace:
    """Vertices in the order they appeared, with statuses, logs and warnings; updated from events."""

    def __init__(self, keep_logs: int | None, term_height: int = 0) -> None:
        self.by_digest: dict[str, _Vertex] = {}
        self.vertexes: list[_Vertex] = []
        self.keep_logs = keep_logs
        self.term_height = term_height
        self.clip = LogClipper()
        self.warnings: list[BuildWarning] = []
        self.start: float | None = None

    def vertex(self, ev: VertexEvent) -> _Vertex:
        v = self.by_digest.get(ev.vertex)
        if v is None:
            v = _Vertex(ev.vertex, ev.name, len(self.by_digest) + 1, logs=deque(maxlen=self.keep_logs))
            self.by_digest[ev.vertex] = v
            self.vertexes.append(v)
            if self.term_height:
                v.term = _Term(self.term_height)
        if self.start is None:
            self.start = ev.ts
        return v

    def apply(self, ev: Event) -> tuple[_Vertex | None, list[str]]:
        """Update from `ev`; returns its vertex and, for a log or an end, the log lines it completed."""
        if isinstance(ev, BuildWarning):
            self.warnings.append(ev)
            if ev.vertex in self.by_digest:
                self.by_digest[ev.vertex].warnings.append(ev.message)
            return None, []
        if not isinstance(ev, VertexEvent) or isinstance(ev, VertexPlanned):  # printers show what ran
            return None, []
        v = self.vertex(ev)
        lines: list[str] = []
        if isinstance(ev, VertexStarted):
            v.started, v.completed, v.cached, v.error, v.inputs = ev.ts, None, False, "", ev.inputs
        elif isinstance(ev, VertexCached):
            v.started, v.completed, v.cached, v.inputs = ev.ts, ev.ts, True, ev.inputs
        elif isinstance(ev, VertexLog):
            data = self.clip(ev.vertex, ev.stream, ev.data)
            if v.term is not None:
                v.term.write(data)
            lines = v.log_lines(ev, data)
        elif isinstance(ev, VertexStatus):
            sid = ev.status_id or ev.name
            s = v.statuses.get(sid)
            if s is None:
                s = v.statuses[sid] = _Status(sid, ev.ts, ev.ts)
            s.current, s.total, s.timestamp = ev.current, ev.total, ev.ts
            if ev.done:
                s.completed = ev.ts
        elif isinstance(ev, VertexCompleted | VertexFailed):
            if v.started is None:
                v.started = ev.ts - ev.duration
            v.completed = v.started + ev.duration if ev.duration > 0 else max(ev.ts, v.started)
            v.error = ev.error if isinstance(ev, VertexFailed) else ""
            lines = v.flush()
        return v, lines

    def encore(self, ts: float) -> list[tuple[_Vertex, list[str]]]:
        """At the end, steps that started and never finished end as canceled (solver/progress.go encore)."""
        out = []
        for v in self.vertexes:
            if v.started is not None and v.completed is None:
                v.completed, v.error = ts, "" if v.cached else "context canceled"
                out.append((v, v.flush()))
        return out

    def error_logs(self) -> str:
        """`printErrorLogs`: each failed step's name and kept log lines between dashes."""
        out = []
        for v in self.vertexes:
            if v.error and not _is_canceled(v.error):
                out += ["------", f" > {v.name}:", *v.logs, "------"]
        return "".join(line + "\n" for line in out)

    def warning_summary(self, color: str = "") -> str:
        """buildx's closing `N warning(s) found:` list."""
        if not self.warnings:
            return ""
        n = len(self.warnings)
        head = f"{n} warning{'s' if n != 1 else ''} found:\n"
        return "\n " + (color + head + _RESET if color else head) + "".join(
            f" - {w.message}\n" for w in self.warnings)


# -- plain ---------------------------------------------------------------------------------------------------------


class PlainPrinter:
    """`#N name`, `#N 0.123 log line`, `#N CACHE MISS: why`, `#N CACHED`, `#N DONE 0.3s`, `#N ERROR: …`.

    The format of `buildctl --progress plain` (progressui/printer.go): a blank line before each new step's block,
    `#N ...` when another step's output interrupts an unfinished one, byte counts for statuses (throttled to 5%
    or 5s steps), and after the build the last lines of failed steps and the warnings. The cache-miss line is
    workbench's own.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.trace = _Trace(keep_logs=ERROR_LOG_LINES)
        self.current: str | None = None
        self.not_first = False
        self.last_status: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()
        self.pending_devices: dict[str, list[tuple[str, bool]]] = {}
        """(line, granted) of device grants of steps not shown yet (they are decided before the solve)."""

    def _switch(self, v: _Vertex, w: list[str]) -> None:
        if self.current == v.digest:
            return
        if self.current is not None:
            w.append(f"#{self.trace.by_digest[self.current].index} ...\n")
        if self.not_first:
            w.append("\n")
        self.not_first = True
        w.append(f"#{v.index} {v.name}\n")
        self.current = v.digest

    def _end(self, v: _Vertex, w: list[str]) -> None:
        if v.error:
            w.append(f"#{v.index} CANCELED\n" if _is_canceled(v.error) else f"#{v.index} ERROR: {v.error}\n")
        elif v.cached:
            w.append(f"#{v.index} CACHED\n")
        else:
            w.append(f"#{v.index} DONE {(v.completed or 0) - (v.started or 0):.1f}s\n")
        self.current = None

    def _status(self, v: _Vertex, ev: VertexStatus) -> list[str]:
        """`#N id 1.20MB / 3.40MB 0.4s done`; an update under 5% and 5s since the last one printed is skipped."""
        s = v.statuses[ev.status_id or ev.name]
        last = self.last_status.get(s.id)
        if last is not None and s.completed is None:
            delta = (s.current - last[0]) / s.total if s.total > 0 else 0.0
            if delta < 0.05 and s.timestamp - last[1] < 5:
                return []
        self.last_status[s.id] = (s.current, s.timestamp)
        amount = s.amount()
        took = (s.completed if s.completed is not None else s.timestamp) - s.started
        tm = (f" {took:.1f}s" if took > 0.01 else "") + (" done" if s.completed is not None else "")
        return [f"#{v.index} {s.id}{' ' + amount if amount else ''}{tm}\n"]

    def __call__(self, ev: Event) -> None:
        with self.lock:
            if isinstance(ev, DeviceGrant):
                self._device(ev)
                return
            v, lines = self.trace.apply(ev)
            w: list[str] = []
            if v is not None:
                body = [f"#{v.index} {line}\n" for line in lines]
                if isinstance(ev, VertexStarted) and ev.miss_reason:
                    body.insert(0, f"#{v.index} CACHE MISS: {printable(ev.miss_reason)}\n")
                elif isinstance(ev, VertexStatus):
                    body += self._status(v, ev)
                body += [f"#{v.index} {line}\n" for line, _ in self.pending_devices.pop(v.digest, [])]
                ends = isinstance(ev, VertexCached | VertexCompleted | VertexFailed)
                if body or ends or isinstance(ev, VertexStarted):
                    self._switch(v, w)
                    w += body
                    if ends:
                        self._end(v, w)
            elif isinstance(ev, BuildFinished):
                for c, rest in self.trace.encore(ev.ts):
                    self._switch(c, w)
                    w += [f"#{c.index} {line}\n" for line in rest]
                    self._end(c, w)
                for pending in self.pending_devices.values():  # denials that stopped the build before its steps
                    w += [line + "\n" for line, granted in pending if not granted]
                self.pending_devices.clear()
                w.append(self.trace.error_logs())
                w.append(self.trace.warning_summary())
            if any(w):
                self.out.write("".join(w))
                self.out.flush()

    def _device(self, ev: DeviceGrant) -> None:
        """A grant/denial under its step, or held until the step shows up."""
        v = self.trace.by_digest.get(ev.vertex)
        if v is None:
            self.pending_devices.setdefault(ev.vertex, []).extend((ln, ev.granted) for ln in device_lines(ev))
            return
        w: list[str] = []
        self._switch(v, w)
        w += [f"#{v.index} {line}\n" for line in device_lines(ev)]
        self.out.write("".join(w))
        self.out.flush()


# -- tty -----------------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    name: str
    start: float | None
    stop: float | None
    status: str = ""
    error: bool = False
    canceled: bool = False
    vertex: _Vertex | None = None
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
        self.trace = _Trace(keep_logs=None, term_height=self.term_height)
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
            self.trace.apply(ev)
            if isinstance(ev, BuildFinished):
                self.trace.encore(ev.ts)
                self._finish(ev.ts)
                return
            if self.live and self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="progress-tty", daemon=True)
                self.thread.start()
            now = self.clock()
            if now - self.last_render >= self.interval:
                self._render(now, final=False)

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
        self.out.write(self.trace.error_logs() + self.trace.warning_summary(yellow))
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
        for v in self.trace.vertexes:
            if v.started is None:
                continue
            name = v.name.replace("\t", " ")
            job = _Job(name, v.started, v.completed, vertex=v)
            if v.error:
                if _is_canceled(v.error):
                    job.canceled, job.name = True, "CANCELED " + job.name
                else:
                    job.error, job.name = True, "ERROR " + job.name
            if v.cached:
                job.name = "CACHED " + job.name
            jobs.append(job)
            for s in v.statuses.values():
                jobs.append(_Job("=> " + s.id, s.started, s.completed, status=s.amount()))
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
        total = len(trace.vertexes)
        done = sum(1 for v in trace.vertexes if v.completed is not None)
        status = "FINISHED" if final and done and done == total else ""
        start = trace.start if trace.start is not None else now
        header = _align(f"[+] {self.phase} {now - start:.1f}s ({done}/{total}) {status}", "", width)
        w.append(header[:width] + "\n")
        count = 0
        for j in jobs:
            if j.start is None:
                continue
            dt = (j.stop if j.stop is not None else now) - j.start
            timer = f" {0.0 if dt < 0.05 else dt:3.1f}s\n"
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
                    line = color + line + _RESET
            w.append(line)
            count += 1
            if j.show_term and j.vertex and j.vertex.term:
                for row in j.vertex.term.content(width - TERM_PAD):
                    w.append(f"{_FAINT} => => # {row}\n{_RESET}")
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


# -- rawjson -------------------------------------------------------------------------------------------------------


def _go_json(doc: object) -> str:
    """Compact JSON as Go's json.Encoder writes it (HTML-safe escapes for <, >, &, U+2028 and U+2029)."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _source_json(src: SourceLocation) -> dict[str, object]:
    return {"filename": src.filename, "start_line": src.start_line, "end_line": src.end_line}


def _omit_empty(pairs: Iterable[tuple[str, object]]) -> dict[str, object]:
    return {k: v for k, v in pairs if v not in (None, "", 0, False, (), [], {})}


@dataclass
class _JsonVertex:
    name: str = ""
    inputs: tuple[str, ...] = ()
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class RawJsonPrinter:
    """One `client.SolveStatus` JSON object per event, as `buildctl --progress rawjson` writes them.

    Vertexes are re-sent whole on each change (started, then completed/cached/error); logs carry base64 data;
    statuses carry byte counts. Workbench's extras sit under a `workbench` key: in a vertex `miss_reason`,
    `cache_key`, `source` and `duration`; in a warning `rule`; at the top level `finished` for BuildFinished
    and `device` for each CDI device grant or denial (DeviceGrant).
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.vertexes: dict[str, _JsonVertex] = {}
        self.status_started: dict[tuple[str, str], float] = {}
        self.clip = LogClipper()
        self.lock = threading.Lock()

    def __call__(self, ev: Event) -> None:
        with self.lock:
            doc = self.solve_status(ev)
            if doc:
                self.out.write(_go_json(doc) + "\n")
                self.out.flush()

    def _vertex(self, digest: str, v: _JsonVertex, error: str = "") -> dict[str, object]:
        return _omit_empty([
            ("digest", digest), ("inputs", list(v.inputs)), ("name", v.name),
            ("started", rfc3339(v.started) if v.started is not None else None),
            ("completed", rfc3339(v.completed) if v.completed is not None else None),
            ("cached", v.cached), ("error", error), ("workbench", _omit_empty(v.extra.items())),
        ])

    def solve_status(self, ev: Event) -> dict[str, object]:
        """The SolveStatus object for one event (empty when the event has nothing to say)."""
        if isinstance(ev, VertexEvent):
            v = self.vertexes.setdefault(ev.vertex, _JsonVertex(ev.name))
        if isinstance(ev, VertexPlanned):  # as BuildKit's first status of a solve: the vertex, not started
            v.inputs = ev.inputs
            v.extra.update(source=_source_json(ev.source) if ev.source else None)
            return {"vertexes": [self._vertex(ev.vertex, v)]}
        if isinstance(ev, VertexStarted):
            v.inputs, v.started, v.completed, v.cached = ev.inputs, ev.ts, None, False
            v.extra.update(miss_reason=ev.miss_reason, source=_source_json(ev.source) if ev.source else None)
            return {"vertexes": [self._vertex(ev.vertex, v)]}
        if isinstance(ev, VertexCached):
            v.inputs, v.started, v.completed, v.cached = ev.inputs, ev.ts, ev.ts, True
            v.extra.update(cache_key=ev.cache_key, source=_source_json(ev.source) if ev.source else None)
            return {"vertexes": [self._vertex(ev.vertex, v)]}
        if isinstance(ev, VertexCompleted | VertexFailed):
            if v.started is None:
                v.started = ev.ts - ev.duration
            v.completed = ev.ts
            v.extra["duration"] = round(ev.duration, 6)
            error = ev.error if isinstance(ev, VertexFailed) else ""
            return {"vertexes": [self._vertex(ev.vertex, v, error)]}
        if isinstance(ev, VertexLog):
            data = self.clip(ev.vertex, ev.stream, ev.data)
            if not data:
                return {}
            return {"logs": [{"vertex": ev.vertex, "stream": ev.stream, "data": _b64(data),
                              "timestamp": rfc3339(ev.ts)}]}
        if isinstance(ev, VertexStatus):
            sid = ev.status_id or ev.name
            started = self.status_started.setdefault((ev.vertex, sid), ev.ts)
            status: dict[str, object] = {"id": sid, "vertex": ev.vertex}
            if ev.total:
                status["total"] = ev.total
            status.update(current=ev.current, timestamp=rfc3339(ev.ts), started=rfc3339(started))
            if ev.done:
                status["completed"] = rfc3339(ev.ts)
            return {"statuses": [status]}
        if isinstance(ev, BuildWarning):
            src = ev.source
            return {"warnings": [_omit_empty([
                ("vertex", ev.vertex), ("level", 1), ("short", _b64(ev.message.encode())),
                ("detail", [_b64(d.encode()) for d in ev.detail]), ("url", ev.url),
                ("sourceInfo", {"filename": src.filename, "language": "Dockerfile"} if src else None),
                ("range", [{"start": {"line": src.start_line}, "end": {"line": src.end_line}}] if src else None),
                ("workbench", _omit_empty([("rule", ev.rule)])),
            ])]}
        if isinstance(ev, DeviceGrant):
            return {"workbench": {"device": {
                "vertex": ev.vertex, "request": ev.request, "devices": list(ev.devices), "granted": ev.granted,
                "how": ev.how, "required": ev.required, "timestamp": rfc3339(ev.ts)}}}
        if isinstance(ev, BuildFinished):
            doc: dict[str, object] = {}
            canceled = [(d, cv) for d, cv in self.vertexes.items() if cv.started is not None and cv.completed is None]
            for _, cv in canceled:
                cv.completed = ev.ts
            if canceled:
                doc["vertexes"] = [self._vertex(d, cv, "" if cv.cached else "context canceled") for d, cv in canceled]
            finished: dict[str, object] = {"duration": round(ev.duration, 6)}
            if ev.error:
                finished["error"] = ev.error
            doc["workbench"] = {"finished": finished}
            return doc
        return {}


def make_printer(mode: str, out: TextIO | None = None) -> PlainPrinter | TtyPrinter | RawJsonPrinter:
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
