"""Progress printers: `plain` (BuildKit's line format), `tty` (one line a step), `rawjson` (one event a line)."""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
import time
from typing import TextIO

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    Event,
    VertexCached,
    VertexCompleted,
    VertexEvent,
    VertexFailed,
    VertexLog,
    VertexStarted,
    VertexStatus,
)


class PlainPrinter:
    """`#N name`, `#N 0.123 log line`, `#N CACHED`, `#N DONE 0.3s`, as `buildctl --progress plain` prints."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.numbers: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.partial: dict[tuple[str, int], bytes] = {}
        self.current: str | None = None

    def _num(self, vertex: str) -> int:
        if vertex not in self.numbers:
            self.numbers[vertex] = len(self.numbers) + 1
        return self.numbers[vertex]

    def _header(self, ev: VertexEvent) -> int:
        n = self._num(ev.vertex)
        if self.current != ev.vertex:
            self.out.write(f"#{n} {ev.name}\n")
            self.current = ev.vertex
        return n

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, VertexStarted):
            self.current = None
            n = self._header(ev)
            self.started[ev.vertex] = ev.ts
            if ev.miss_reason:
                self.out.write(f"#{n} cache miss: {ev.miss_reason}\n")
        elif isinstance(ev, VertexCached):
            self.current = None
            n = self._header(ev)
            self.out.write(f"#{n} CACHED\n\n")
            self.current = None
        elif isinstance(ev, VertexLog):
            n = self._header(ev)
            data = self.partial.pop((ev.vertex, ev.stream), b"") + ev.data
            *lines, rest = data.split(b"\n")
            if rest:
                self.partial[(ev.vertex, ev.stream)] = rest
            elapsed = ev.ts - self.started.get(ev.vertex, ev.ts)
            for line in lines:
                self.out.write(f"#{n} {elapsed:.3f} {line.decode(errors='replace')}\n")
        elif isinstance(ev, VertexStatus):
            if ev.done and ev.status_id:
                n = self._header(ev)
                self.out.write(f"#{n} {ev.status_id} done\n")
        elif isinstance(ev, VertexCompleted | VertexFailed):
            n = self._header(ev)
            for (vertex, stream), rest in list(self.partial.items()):
                if vertex == ev.vertex:
                    self.out.write(f"#{n} {rest.decode(errors='replace')}\n")
                    del self.partial[(vertex, stream)]
            if isinstance(ev, VertexFailed):
                self.out.write(f"#{n} ERROR: {ev.error}\n\n")
            else:
                self.out.write(f"#{n} DONE {ev.duration:.1f}s\n\n")
            self.current = None
        elif isinstance(ev, BuildWarning):
            where = f" ({ev.source.filename}:{ev.source.start_line})" if ev.source else ""
            self.out.write(f"WARNING: {ev.message}{where}\n")
        self.out.flush()


class TtyPrinter:
    """A compact view: one line per finished step, with its time; a failed step's output is shown in full."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.begin = time.time()
        self.logs: dict[str, list[bytes]] = {}
        self.count = 0

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, VertexCached):
            self.count += 1
            self.out.write(f" => CACHED {ev.name}\n")
        elif isinstance(ev, VertexStarted):
            self.out.write(f" => {ev.name}" + (f"  ({ev.miss_reason})" if ev.miss_reason else "") + "\n")
        elif isinstance(ev, VertexLog):
            self.logs.setdefault(ev.vertex, []).append(ev.data)
        elif isinstance(ev, VertexCompleted):
            self.count += 1
            self.out.write(f" => {ev.name}  {ev.duration:.1f}s\n")
        elif isinstance(ev, VertexFailed):
            self.out.write(f" => ERROR {ev.name}  {ev.duration:.1f}s\n")
            for line in b"".join(self.logs.get(ev.vertex, [])).decode(errors="replace").splitlines()[-20:]:
                self.out.write(f"    {line}\n")
        elif isinstance(ev, BuildWarning):
            self.out.write(f" WARNING: {ev.message}\n")
        elif isinstance(ev, BuildFinished):
            state = "FINISHED" if not ev.error else "ERROR"
            self.out.write(f"[+] Building {ev.duration:.1f}s ({self.count} steps) {state}\n")
        self.out.flush()


class RawJsonPrinter:
    """One JSON object per event: {"type": "VertexStarted", ...}; log data is base64."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, ev: Event) -> None:
        self.out.write(json.dumps(event_to_json(ev)) + "\n")
        self.out.flush()


def event_to_json(ev: Event) -> dict[str, object]:
    body: dict[str, object] = {"type": type(ev).__name__}
    for f in dataclasses.fields(ev):
        value = getattr(ev, f.name)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        body[f.name] = value
    return body


def make_printer(mode: str, out: TextIO | None = None) -> PlainPrinter | TtyPrinter | RawJsonPrinter:
    if mode == "auto":
        mode = "tty" if (out or sys.stderr).isatty() else "plain"
    if mode == "plain":
        return PlainPrinter(out)
    if mode == "tty":
        return TtyPrinter(out)
    if mode == "rawjson":
        return RawJsonPrinter(out)
    raise ValueError(f"unknown progress mode {mode!r}: use auto, plain, tty or rawjson")
