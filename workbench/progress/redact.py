"""Keep secret values out of everything a build shows or records: a bus that redacts events on the way.

The values are read once from the client's session (files, environment variables) when the build starts
and live only in memory. Every str and bytes field of every event (log chunks, errors, warnings, names) has
each value replaced by `****`. A log chunk that ends with the start of a value is held back until the next
chunk of that step and stream (or the step's end), so a value split across two chunks is caught too.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from typing import Any

from workbench.progress.events import Event, EventBus, VertexCompleted, VertexFailed, VertexLog

MASK = "****"


class Redactor:
    """Replaces secret values in bytes, strings and (recursively) dataclass fields."""

    def __init__(self, values: list[bytes]) -> None:
        self.values = values
        self._bytes = re.compile(b"|".join(re.escape(v) for v in values)) if values else None
        texts = sorted({v.decode("utf-8", "surrogateescape") for v in values}, key=len, reverse=True)
        self._text = re.compile("|".join(re.escape(t) for t in texts)) if texts else None

    def __bool__(self) -> bool:
        return bool(self.values)

    def data(self, data: bytes) -> bytes:
        return self._bytes.sub(MASK.encode(), data) if self._bytes else data

    def text(self, text: str) -> str:
        return self._text.sub(MASK, text) if self._text else text

    def value(self, value: Any) -> Any:
        if isinstance(value, bytes):
            return self.data(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: self.value(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
            return dataclasses.replace(value, **changes)
        return value

    def held_back(self, data: bytes) -> int:
        """How many bytes at the end of `data` could be the start of a value (to wait for the next chunk)."""
        longest = 0
        for v in self.values:
            for n in range(min(len(v) - 1, len(data)), longest, -1):
                if data.endswith(v[:n]):
                    longest = n
                    break
        return longest


class RedactingBus(EventBus):
    """An EventBus that hands every event, redacted, to another bus (whose subscribers see no secret)."""

    def __init__(self, target: EventBus, redactor: Redactor) -> None:
        super().__init__()
        self.target = target
        self.redactor = redactor
        self._pending: dict[tuple[str, int], VertexLog] = {}
        self._pending_lock = threading.Lock()

    def subscribe(self, sink: Any) -> None:
        self.target.subscribe(sink)

    def emit(self, event: Event) -> None:
        if not self.redactor:
            self.target.emit(event)
            return
        with self._pending_lock:
            out = self._redact(event)
        for ev in out:
            self.target.emit(ev)

    def _redact(self, event: Event) -> list[Event]:
        out: list[Event] = []
        if isinstance(event, VertexLog):
            key = (event.vertex, event.stream)
            held = self._pending.pop(key, None)
            data = (held.data if held else b"") + event.data
            keep = self.redactor.held_back(data)
            if keep:
                self._pending[key] = dataclasses.replace(event, data=data[len(data) - keep:])
                data = data[:len(data) - keep]
            # redact the whole, then cut: a value that straddles the cut is caught on the next chunk
            if data:
                out.append(self.redactor.value(dataclasses.replace(event, data=data)))
            return out
        if isinstance(event, VertexCompleted | VertexFailed):
            for key in [k for k in self._pending if k[0] == event.vertex]:
                out.append(self.redactor.value(dataclasses.replace(self._pending.pop(key), ts=event.ts)))
        out.append(self.redactor.value(event))
        return out
