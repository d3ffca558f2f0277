"""`workbench replay SESSION`: the TUI on a recorded session, nothing executed, with a timeline to scrub.

The workbench app (workbench.tui) fills its graph, logs and panels from an event source; here the source is
the session's events played with their recorded timing (workbench.progress.replay.EventSource). Moving on
the timeline restarts the app's build view and feeds it the events up to the new position at once, then
plays on from there (or stays paused).

Keys: `p` pause/play · `.` / `,` one event forward / back · `]` / `[` 5 s forward / back ·
`{` / `}` start / end · `+` / `-` speed ×2 / ÷2 (the graph's own keys, g/G/space/arrows, stay as they are).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.widgets import Static

from workbench.history.store import RecordedSession
from workbench.progress.replay import EventSource
from workbench.tui.app import WorkbenchApp
from workbench.tui.source import EventSource as TuiEventSource
from workbench.tui.source import Sink

SEEK_STEP = 5.0


class TimelineSource(TuiEventSource):
    """Feeds the app the events before the replay's position at once, then the rest at the recorded pace."""

    rerunnable = False

    def __init__(self, replay: EventSource, dockerfile: Path | None) -> None:
        self.replay = replay
        self.dockerfile = dockerfile
        self.on_event: Any = None
        """Called after each event is delivered (the timeline redraws)."""

    def run(self, sink: Sink, cancel: threading.Event, no_cache: bool = False) -> None:
        src = self.replay
        for event in src.played():
            if cancel.is_set():
                return
            sink(event)
        self._delivered()
        while not cancel.is_set() and not src.at_end:
            if src.paused:
                cancel.wait(0.05)
                continue
            delay = src.delay_before(src.position)
            if delay > 0 and cancel.wait(delay):
                return
            if src.paused or cancel.is_set():
                continue
            following = src.step()
            if following is not None:
                sink(following)
                self._delivered()

    def _delivered(self) -> None:
        if self.on_event is not None:
            self.on_event()


def timeline_text(src: EventSource, width: int = 40) -> str:
    """`▶ 1.2s / 3.4s  [#####-----]  event 12/40  ×1`."""
    total = src.duration
    now = src.elapsed
    filled = int(round(width * (src.position / len(src)))) if len(src) else width
    bar = "█" * filled + "░" * (width - filled)
    icon = "⏸" if src.paused else ("■" if src.at_end else "▶")
    speed = f"×{src.speed:g}"
    return f"{icon} {now:6.1f}s / {total:.1f}s  {bar}  event {src.position}/{len(src)}  {speed}"


class ReplayApp(WorkbenchApp):
    """The workbench app on a recorded session, with a timeline bar and scrub keys."""

    BINDINGS = [
        *WorkbenchApp.BINDINGS,
        Binding("p", "toggle_pause", "Pause/Play"),
        Binding("full_stop", "step(1)", "Step", show=False),
        Binding("comma", "step(-1)", "Back", show=False),
        Binding("right_square_bracket", "seek(5)", "+5s"),
        Binding("left_square_bracket", "seek(-5)", "-5s"),
        Binding("left_curly_bracket", "jump(0)", "Start", show=False),
        Binding("right_curly_bracket", "jump(1)", "End", show=False),
        Binding("plus", "speed(2)", "Faster", show=False),
        Binding("minus", "speed(0.5)", "Slower", show=False),
    ]

    def __init__(self, session: RecordedSession, replay: EventSource, **kw: Any) -> None:
        dockerfile = session.path / "Dockerfile"
        self.replay = replay
        self.session = session
        self.timeline_source = TimelineSource(replay, dockerfile if dockerfile.is_file() else None)
        last = replay.events[-1].ts if replay.events else 0.0
        kw.setdefault("clock", lambda: self._now(last))
        kw.setdefault("watch", False)
        super().__init__(self.timeline_source, **kw)
        self.timeline_source.on_event = lambda: self.call_from_thread(self._update_timeline)

    def _now(self, last: float) -> float:
        played = self.replay.position
        return self.replay.events[played - 1].ts if played else (self.replay.start or last)

    def compose(self) -> Any:
        yield from super().compose()
        yield Static(timeline_text(self.replay), id="timeline")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#timeline", Static).styles.height = 1
        self.query_one("#timeline", Static).styles.dock = "bottom"
        self.title = f"replay {self.session.id}"

    def _update_timeline(self) -> None:
        try:
            self.query_one("#timeline", Static).update(timeline_text(self.replay))
        except Exception:  # the app is closing
            pass

    def _restart_at(self, index: int) -> None:
        """Stop the feeding thread, move the position, and rebuild the view from the events before it."""
        self.runner.cancel(wait=5)
        self.replay.seek(index)
        self.start_build()
        self._update_timeline()

    def action_toggle_pause(self) -> None:
        if self.replay.paused:
            self.replay.resume()
        else:
            self.replay.pause()
        self._update_timeline()

    def action_step(self, delta: int) -> None:
        self.replay.pause()
        self._restart_at(self.replay.position + delta)

    def action_seek(self, seconds: float) -> None:
        self._restart_at_time(self.replay.elapsed + seconds)

    def _restart_at_time(self, seconds: float) -> None:
        import bisect

        times = [e.ts - self.replay.start for e in self.replay.events]
        self._restart_at(bisect.bisect_right(times, seconds))

    def action_jump(self, where: int) -> None:
        self._restart_at(len(self.replay) if where else 0)

    def action_speed(self, factor: float) -> None:
        self.replay.speed = min(max(self.replay.speed * factor, 0.125), 256.0)
        self._update_timeline()


def run_replay(session: RecordedSession, replay: EventSource) -> int:
    """Run the replay app on a terminal; returns the exit status."""
    import sys

    if not sys.stdout.isatty():
        print("workbench replay: stdout is not a terminal; use --progress plain to replay as text", file=sys.stderr)
        return 2
    app = ReplayApp(session, replay)
    try:
        return int(app.run() or 0)
    finally:
        app.stop()
