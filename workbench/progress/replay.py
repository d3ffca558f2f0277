"""Replaying a recorded session: an event source with the original timing, and the text views fed from it.

`EventSource` is what a live view needs to show a session as it happened, with nothing executed:

    source = EventSource(load_session(path).events, speed=4.0)
    for event in source.play():          # sleeps between events as they were recorded, sped up 4×
        view(event)

and for a timeline: `len(source)`, `source.position` (events delivered so far), `source.step()` (the next
event, or None at the end), `source.seek(n)` / `source.seek_time(t)` (move to before event n / time t
seconds into the build; the caller rebuilds its view from `source.played()`), `source.time_at(n)`,
`source.duration`, `pause()`/`resume()` and `speed`, which may change while playing.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from workbench.progress.events import Event


class EventSource:
    """The events of a session, played back in order with their recorded spacing (divided by `speed`)."""

    def __init__(self, events: list[Event], speed: float = 1.0, max_gap: float | None = None) -> None:
        self.events = list(events)
        self.speed = speed
        """Playback rate: 1 is as recorded, 2 twice as fast; 0 or less means no waiting at all."""
        self.max_gap = max_gap
        """The longest wait between two events, in recorded seconds (None: as recorded)."""
        self.position = 0
        self._times = [e.ts for e in self.events]
        self._start = self._times[0] if self._times else 0.0
        self._resume = threading.Event()
        self._resume.set()
        self._moved = threading.Event()

    def __len__(self) -> int:
        return len(self.events)

    @property
    def start(self) -> float:
        """The wall-clock time of the first event."""
        return self._start

    @property
    def duration(self) -> float:
        """Seconds from the first event to the last."""
        return self._times[-1] - self._start if self._times else 0.0

    @property
    def at_end(self) -> bool:
        return self.position >= len(self.events)

    def time_at(self, index: int) -> float:
        """Seconds into the session of event `index` (the end for an index past the last)."""
        if not self._times:
            return 0.0
        return self._times[min(max(index, 0), len(self._times) - 1)] - self._start

    @property
    def elapsed(self) -> float:
        """Seconds into the session at the current position (the time of the last delivered event)."""
        return self.time_at(self.position - 1) if self.position else 0.0

    def played(self) -> list[Event]:
        """The events delivered so far (rebuild a view from these after a seek)."""
        return self.events[:self.position]

    def step(self) -> Event | None:
        """Deliver the next event at once (None at the end)."""
        if self.at_end:
            return None
        event = self.events[self.position]
        self.position += 1
        return event

    def seek(self, index: int) -> None:
        """Move so that the next event delivered is event `index` (0 = the beginning)."""
        self.position = min(max(index, 0), len(self.events))
        self._moved.set()

    def seek_time(self, seconds: float) -> None:
        """Move to `seconds` into the session: every event recorded at or before then counts as delivered."""
        self.seek(bisect.bisect_right(self._times, self._start + seconds))

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def delay_before(self, index: int) -> float:
        """How long to wait, in real seconds, between event `index - 1` and event `index`."""
        if index <= 0 or index >= len(self.events) or self.speed <= 0:
            return 0.0
        gap = max(self._times[index] - self._times[index - 1], 0.0)
        if self.max_gap is not None:
            gap = min(gap, self.max_gap)
        return gap / self.speed

    def play(self, sleep: Callable[[float], object] | None = None) -> Iterator[Event]:
        """Deliver the remaining events with their recorded timing; honours pause and seek while it runs."""
        while not self.at_end:
            self._resume.wait()
            delay = self.delay_before(self.position)
            if delay > 0:
                if sleep is not None:
                    sleep(delay)
                else:
                    self._moved.clear()
                    if self._moved.wait(delay):  # a seek during the wait: deliver from the new position
                        continue
            if self.paused:
                continue
            event = self.step()
            if event is not None:
                yield event


def replay_text(events: list[Event], mode: str, out: TextIO, log_limit: int | None = None) -> None:
    """Feed `events` to the `--progress MODE` view (plain, rawjson or tty, drawn as final frames) at once.

    `log_limit` is the step log clip the build's views used (BUILDKIT_STEP_LOG_MAX_SIZE; None: this
    process's own).
    """
    from workbench.progress.logclip import LogClipper
    from workbench.progress.plain import PlainPrinter
    from workbench.progress.rawjson import RawJsonPrinter
    from workbench.progress.tty import TtyPrinter

    view: Callable[[Event], None]
    if mode == "plain":
        view = plain = PlainPrinter(out)
        plain.clip = LogClipper(log_limit)
    elif mode == "rawjson":
        view = raw = RawJsonPrinter(out)
        raw.clip = LogClipper(log_limit)
    elif mode == "tty":
        last = events[-1].ts if events else 0.0
        tty = TtyPrinter(out, live=False, clock=lambda: last)
        for event in events:
            tty(event)
        tty.close()
        return
    else:
        raise ValueError(f"unknown progress mode {mode!r}: use plain, rawjson or tty")
    for event in events:
        view(event)


def replay_timed(events: list[Event], mode: str, out: TextIO, speed: float) -> None:
    """As replay_text, but with the recorded timing (speed 2 is twice as fast)."""
    from workbench.progress.printers import make_printer

    view = make_printer(mode, out)
    source = EventSource(events, speed=speed)
    for event in source.play(sleep=time.sleep):
        view(event)
    close = getattr(view, "close", None)
    if close is not None:
        close()
