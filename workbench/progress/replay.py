"""Replaying a recorded session: an event source with the original timing, and the text views fed from it.

`EventSource` is what a live view needs to show a session as it happened, with nothing executed:

    source = EventSource(load_session(path).events, speed=4.0)
    for event in source.play():          # sleeps between events as they were recorded, sped up 4×
        view(event)

and for a timeline: `len(source)`, `source.position` (events delivered so far), `source.step()` (the next
event, or None at the end), `source.seek(n)` / `source.seek_time(t)` (move to before event n / time t
seconds into the build), `source.advance(dt)` (play on by dt seconds of wall time, for a view that keeps its
own clock), `source.time_at(n)`, `source.duration`, `pause()`/`resume()` and `speed`, which may change while
playing.

`SeekableFold` keeps a view's model folded from the events up to any position: moving forward applies only the
events in between, moving back starts from a copy of the model kept every few hundred events, so a seek never
replays the whole session.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TextIO, TypeVar

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
        self._owed = 0.0
        """Wall seconds `advance` has played toward the next event."""

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
        self._owed = 0.0
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

    def advance(self, real_seconds: float) -> int:
        """Play on by `real_seconds` of wall time (nothing while paused; all at once at speed 0): the events
        due by then count as delivered. The new position; time short of the next event carries over."""
        if self.paused or self.at_end:
            self._owed = 0.0
            return self.position
        if self.speed <= 0:
            self.position = len(self.events)
            return self.position
        self._owed += max(real_seconds, 0.0)
        while not self.at_end:
            delay = self.delay_before(self.position)
            if delay > self._owed:
                break
            self._owed -= delay
            self.position += 1
        return self.position

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


M = TypeVar("M")


class SeekableFold(Generic[M]):
    """A model folded from `events` up to any position, cheaply: forward by applying the events in between,
    back from the nearest copy of the model kept every `interval` events (one copy and at most `interval`
    events per seek, however long the session)."""

    def __init__(self, events: Sequence[Event], new: Callable[[], M], apply: Callable[[M, Event], object],
                 copy: Callable[[M], M], interval: int | None = None) -> None:
        self.events = events
        self._new, self._apply, self._copy = new, apply, copy
        self.interval = interval or max(256, len(events) // 64)
        """Events between kept copies (at most about 64 copies)."""
        self.model: M = new()
        self.position = 0
        """How many events `model` has been folded from."""
        self._kept: dict[int, M] = {}

    def seek(self, index: int, budget_s: float | None = None) -> bool:
        """Fold `model` to just before event `index`; whether `model` is now another object (it moved back).
        With `budget_s`, folding forward stops after about that long: `position` says how far it got."""
        index = min(max(index, 0), len(self.events))
        replaced = False
        if index < self.position:
            base = max((k for k in self._kept if k <= index), default=0)
            self.model = self._copy(self._kept[base]) if base else self._new()
            self.position = base
            replaced = True
        deadline = time.perf_counter() + budget_s if budget_s is not None else None
        while self.position < index:
            self._apply(self.model, self.events[self.position])
            self.position += 1
            if self.position % self.interval == 0:
                if self.position not in self._kept:
                    self._kept[self.position] = self._copy(self.model)
            elif deadline is not None and self.position % 32 == 0 and time.perf_counter() > deadline:
                break
        return replaced


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
