"""A recorded build on a timeline, for the TUI's replay views (`workbench replay`, the history screen).

The position moves at once on a key (play, step, seek, jump): `EventSource` holds it. The model the views
show follows it in `sync`, folded by `SeekableFold`: forward by the events in between, back from a copy kept
every few hundred events. Moves coalesce: ten quick `.` presses cost one fold of ten events and one redraw,
not ten rebuilds of the view.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from textual.binding import Binding
from textual.message_pump import MessagePump
from textual.timer import Timer

from workbench.progress.events import Event
from workbench.progress.replay import EventSource, SeekableFold
from workbench.tui.model import BuildModel

SEEK_STEP = 5.0
"""Seconds `[` and `]` move."""
TICK_S = 1 / 30
"""How often the clock plays on while playing."""
SYNC_BUDGET_S = 0.05
"""The longest one fold may hold the UI (a jump over a flood of events goes on at the next turn)."""

REPLAY_BINDINGS = [
    Binding("p", "toggle_pause", "Pause/Play"),
    Binding("full_stop", "step(1)", "Step", show=False, tooltip="one event forward (pauses)"),
    Binding("comma", "step(-1)", "Back", show=False, tooltip="one event back (pauses)"),
    Binding("right_square_bracket", "seek(5)", "+5s"),
    Binding("left_square_bracket", "seek(-5)", "-5s"),
    Binding("left_curly_bracket", "jump(0)", "Start", show=False),
    Binding("right_curly_bracket", "jump(1)", "End", show=False),
    Binding("plus", "speed(2)", "Faster", show=False),
    Binding("minus", "speed(0.5)", "Slower", show=False),
]
"""The timeline's keys (the replay views' `action_*` methods hand them to their `ReplayPlayer`)."""


class ReplayKeys:
    """The actions of `REPLAY_BINDINGS`, for an app or screen that holds a `player`."""

    player: ReplayPlayer

    def action_toggle_pause(self) -> None:
        self.player.toggle_pause()

    def action_step(self, delta: int) -> None:
        self.player.step(delta)

    def action_seek(self, seconds: float) -> None:
        self.player.seek(seconds)

    def action_jump(self, where: int) -> None:
        self.player.jump(bool(where))

    def action_speed(self, factor: float) -> None:
        self.player.speed(factor)


def copy_model(model: BuildModel) -> BuildModel:
    """A deep copy of `model`, quick where it is big: the log lines (lists of strings, only ever appended to)
    are copied as lists, not string by string."""
    memo: dict[int, object] = {id(model.combined): list(model.combined)}
    for v in model.vertices.values():
        memo[id(v.log.lines)] = list(v.log.lines)
    return copy.deepcopy(model, memo)


def _apply(model: BuildModel, event: Event) -> None:
    model.apply(event)


class ReplayPlayer:
    """Plays `source` into a BuildModel for a view: `attach` starts the clock on the view's event loop;
    `redraw(replaced)` is called after each fold (`replaced`: `model` is another object now)."""

    def __init__(self, source: EventSource, redraw: Callable[[bool], object]) -> None:
        self.source = source
        self.fold = SeekableFold(source.events, BuildModel, _apply, copy_model)
        self._redraw = redraw
        self._host: MessagePump | None = None
        self._clock: Timer | None = None
        self._clock_running = False
        self._pending = False
        self._last_tick = 0.0
        self.syncs = 0
        """Folds done (fewer than the moves asked when they came quickly)."""

    @property
    def model(self) -> BuildModel:
        return self.fold.model

    @property
    def synced(self) -> bool:
        """Whether the model shows the timeline's position."""
        return self.fold.position == self.source.position

    def now(self) -> float:
        """The recorded time at the model's position (the clock of the views' running timers)."""
        events, n = self.source.events, self.fold.position
        if n:
            return events[n - 1].ts
        return events[0].ts if events else 0.0

    def attach(self, host: MessagePump) -> None:
        """Start playing on `host`'s event loop (the app or screen showing the replay)."""
        self._host = host
        self._clock = host.set_interval(TICK_S, self._tick, pause=True)
        self._wind()
        self.request_sync()

    @property
    def playing(self) -> bool:
        return not self.source.paused and not self.source.at_end

    def _wind(self) -> None:
        """Run the clock while playing, stop it otherwise (a paused replay costs nothing)."""
        if self._clock is None:
            return
        if self.playing and not self._clock_running:
            self._last_tick = time.monotonic()
            self._clock.resume()
        elif not self.playing and self._clock_running:
            self._clock.pause()
        self._clock_running = self.playing

    def _tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        if self.source.advance(elapsed) != self.fold.position:
            self.request_sync()
        self._wind()

    def request_sync(self) -> None:
        """Fold to the position once the moves queued before this one are in (one fold for a burst of keys)."""
        if not self._pending and self._host is not None:
            self._pending = True
            self._host.call_later(self._sync)

    def _sync(self) -> None:
        self._pending = False
        self._wind()
        self.syncs += 1
        replaced = self.fold.seek(self.source.position, SYNC_BUDGET_S)
        self._redraw(replaced)
        if not self.synced:
            self.request_sync()

    # -- the keys ---------------------------------------------------------------------------------------

    def toggle_pause(self) -> None:
        if self.source.paused:
            self.source.resume()
        else:
            self.source.pause()
        self.request_sync()

    def step(self, delta: int) -> None:
        """`delta` events on (back when negative), paused there."""
        self.source.pause()
        self.source.seek(self.source.position + delta)
        self.request_sync()

    def seek(self, seconds: float) -> None:
        """`seconds` of the recording on (back when negative); playing goes on from there."""
        self.source.seek_time(self.source.elapsed + seconds)
        self.request_sync()

    def jump(self, end: bool) -> None:
        self.source.seek(len(self.source) if end else 0)
        self.request_sync()

    def speed(self, factor: float) -> None:
        self.source.speed = min(max(self.source.speed * factor, 0.125), 256.0)
        self.request_sync()


def timeline_text(src: EventSource, width: int = 40) -> str:
    """`▶ 1.2s / 3.4s  [#####-----]  event 12/40  ×1`."""
    total = src.duration
    now = src.elapsed
    filled = int(round(width * (src.position / len(src)))) if len(src) else width
    bar = "█" * filled + "░" * (width - filled)
    icon = "⏸" if src.paused else ("■" if src.at_end else "▶")
    speed = f"×{src.speed:g}"
    return f"{icon} {now:6.1f}s / {total:.1f}s  {bar}  event {src.position}/{len(src)}  {speed}"
