"""`--progress plain`: the step-by-step text of `buildctl --progress plain` (progressui/printer.go)."""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import TextIO

from workbench.progress.events import (
    BuildFinished,
    DeviceGrant,
    Event,
    VertexCached,
    VertexCompleted,
    VertexFailed,
    VertexLog,
    VertexStarted,
    VertexStatus,
)
from workbench.progress.logclip import LogClipper
from workbench.progress.text import printable
from workbench.progress.textview import LineStep, amount, device_lines, error_logs, warning_summary
from workbench.progress.trace import CACHED, CANCELED, FAILED, Trace, paused_label

ERROR_LOG_LINES = 10
"""How many of a failed step's last log lines the plain view repeats after the build (BuildKit's logsBuffer)."""


def _step(vertex: str, name: str, number: int) -> LineStep:
    return LineStep(vertex, name, number, logs=deque(maxlen=ERROR_LOG_LINES))


class PlainPrinter:
    """`#N name`, `#N 0.123 log line`, `#N CACHE MISS: why`, `#N CACHED`, `#N DONE 0.3s`, `#N ERROR: …`.

    The format of `buildctl --progress plain` (progressui/printer.go): a blank line before each new step's block,
    `#N ...` when another step's output interrupts an unfinished one, byte counts for statuses (throttled to 5%
    or 5s steps), and after the build the last lines of failed steps and the warnings. The cache-miss line is
    workbench's own.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.trace = Trace(_step)
        self.clip = LogClipper()
        self.current: str | None = None
        self.not_first = False
        self.last_status: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()
        self.pending_devices: dict[str, list[tuple[str, bool]]] = {}
        """(line, granted) of device grants of steps not shown yet (they are decided before the solve)."""

    def _switch(self, v: LineStep, w: list[str]) -> None:
        if self.current == v.id:
            return
        if self.current is not None:
            w.append(f"#{self.trace.vertices[self.current].number} ...\n")
        if self.not_first:
            w.append("\n")
        self.not_first = True
        w.append(f"#{v.number} {v.name}\n")
        self.current = v.id

    def _end(self, v: LineStep, w: list[str]) -> None:
        if v.state == CANCELED:
            w.append(f"#{v.number} CANCELED\n")
        elif v.state == FAILED:
            w.append(f"#{v.number} ERROR: {v.error}\n")
        elif v.state == CACHED:
            w.append(f"#{v.number} CACHED\n")
        else:
            held = f" ({paused_label(v.paused)})" if v.paused else ""  # a debugger's pause, apart from run time
            w.append(f"#{v.number} DONE {(v.completed or 0) - (v.started or 0) - v.paused:.1f}s{held}\n")
        self.current = None

    def _status(self, v: LineStep, ev: VertexStatus) -> list[str]:
        """`#N id 1.20MB / 3.40MB 0.4s done`; an update under 5% and 5s since the last one printed is skipped."""
        s = v.statuses[ev.status_id or ev.name]
        last = self.last_status.get(s.id)
        if last is not None and s.completed is None:
            delta = (s.current - last[0]) / s.total if s.total > 0 else 0.0
            if delta < 0.05 and s.timestamp - last[1] < 5:
                return []
        self.last_status[s.id] = (s.current, s.timestamp)
        size = amount(s)
        took = (s.completed if s.completed is not None else s.timestamp) - s.started
        tm = (f" {took:.1f}s" if took > 0.01 else "") + (" done" if s.completed is not None else "")
        return [f"#{v.number} {s.id}{' ' + size if size else ''}{tm}\n"]

    def __call__(self, ev: Event) -> None:
        with self.lock:
            if isinstance(ev, DeviceGrant):
                self._device(ev)
                return
            changed = self.trace.apply(ev)
            w: list[str] = []
            if isinstance(ev, BuildFinished):
                for c in changed:  # the steps the end canceled
                    self._switch(c, w)
                    w += [f"#{c.number} {line}\n" for line in c.flush()]
                    self._end(c, w)
                for pending in self.pending_devices.values():  # denials that stopped the build before its steps
                    w += [line + "\n" for line, granted in pending if not granted]
                self.pending_devices.clear()
                w.append(error_logs(self.trace.steps))
                w.append(warning_summary(self.trace.warnings))
            elif changed:
                v = changed[0]
                ends = isinstance(ev, VertexCached | VertexCompleted | VertexFailed)
                if isinstance(ev, VertexLog):
                    lines = v.log_lines(ev, self.clip(ev.vertex, ev.stream, ev.data))
                else:
                    lines = v.flush() if isinstance(ev, VertexCompleted | VertexFailed) else []
                body = [f"#{v.number} {line}\n" for line in lines]
                if isinstance(ev, VertexStarted) and ev.miss_reason:
                    body.insert(0, f"#{v.number} CACHE MISS: {printable(ev.miss_reason)}\n")
                elif isinstance(ev, VertexStatus):
                    body += self._status(v, ev)
                body += [f"#{v.number} {line}\n" for line, _ in self.pending_devices.pop(v.id, [])]
                if body or ends or isinstance(ev, VertexStarted):
                    self._switch(v, w)
                    w += body
                    if ends:
                        self._end(v, w)
            if any(w):
                self.out.write("".join(w))
                self.out.flush()

    def _device(self, ev: DeviceGrant) -> None:
        """A grant/denial under its step, or held until the step shows up."""
        v = self.trace.vertices.get(ev.vertex)
        if v is None:
            self.pending_devices.setdefault(ev.vertex, []).extend((ln, ev.granted) for ln in device_lines(ev))
            return
        w: list[str] = []
        self._switch(v, w)
        w += [f"#{v.number} {line}\n" for line in device_lines(ev)]
        self.out.write("".join(w))
        self.out.flush()
