"""`workbench replay SESSION`: the TUI on a recorded session, nothing executed, with a timeline to scrub.

The workbench app (workbench.tui) shows a BuildModel in its graph, logs and panels; here the model is folded
from the session's events by a ReplayPlayer (workbench.tui.replay_player), played with their recorded timing.
Moving on the timeline refolds only what changed (forward: the events in between; back: from a kept copy),
and quick keys coalesce into one fold: no build is started, so the status line names the recording, and
the build counter never moves.

Keys: `p` pause/play · `.` / `,` one event forward / back · `]` / `[` 5 s forward / back ·
`{` / `}` start / end · `+` / `-` speed ×2 / ÷2 (the graph's own keys, g/G/space/arrows, stay as they are).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual.widgets import Static

from workbench.history.store import RecordedSession
from workbench.progress.replay import EventSource
from workbench.tui.app import WorkbenchApp
from workbench.tui.replay_player import REPLAY_BINDINGS, SEEK_STEP, ReplayKeys, ReplayPlayer, timeline_text
from workbench.tui.source import EventSource as TuiEventSource
from workbench.tui.source import Sink
from workbench.tui.widgets.dag_view import DagView

__all__ = ["SEEK_STEP", "RecordingSource", "ReplayApp", "run_replay", "timeline_text"]


class RecordingSource(TuiEventSource):
    """A recorded build as the app's source: its Dockerfile for the editor; never run again."""

    rerunnable = False

    def __init__(self, replay: EventSource, dockerfile: Path | None) -> None:
        self.replay = replay
        self.dockerfile = dockerfile

    def run(self, sink: Sink, cancel: threading.Event, no_cache: bool = False) -> None:
        for event in self.replay.events:
            if cancel.is_set():
                return
            sink(event)


class ReplayApp(ReplayKeys, WorkbenchApp):
    """The workbench app on a recorded session, with a timeline bar and scrub keys."""

    BINDINGS = [*WorkbenchApp.BINDINGS, *REPLAY_BINDINGS]

    def __init__(self, session: RecordedSession, replay: EventSource, **kw: Any) -> None:
        dockerfile = session.path / "Dockerfile"
        self.replay = replay
        self.session = session
        self.player = ReplayPlayer(replay, self._replayed)
        self._shown_revision = -1
        kw.setdefault("clock", self.player.now)
        kw.setdefault("watch", False)
        super().__init__(RecordingSource(replay, dockerfile if dockerfile.is_file() else None), **kw)

    @property
    def build_label(self) -> str:
        """The recording, not a build of this app: `replay <id>`."""
        return f"replay {self.session.id[:12]}"

    def compose(self) -> Any:
        yield from super().compose()
        yield Static(timeline_text(self.replay), id="timeline")

    def on_mount(self) -> None:  # Textual calls WorkbenchApp.on_mount too, after this one
        self.query_one("#timeline", Static).styles.height = 1
        self.query_one("#timeline", Static).styles.dock = "bottom"
        self.title = f"replay {self.session.id}"

    def start_build(self) -> None:
        """Nothing is built: the player folds the recorded events (the app calls this once, on mount)."""
        self.player.attach(self)

    def _replayed(self, replaced: bool) -> None:
        """The player folded the model to the timeline's position: show it."""
        model = self.player.model
        if replaced or model is not self.model:
            self.model = model  # the views take it in _refresh_views
            self._graph_dirty = True
        elif model.revision != self._shown_revision:
            self._graph_dirty = True
        self._shown_revision = model.revision
        self.views_follow()  # at most every VIEW_INTERVAL_S: keys never wait for a redraw
        self._update_timeline()

    def _refresh_views(self) -> None:
        if not self._main_screen_hidden():
            dag = self.query_one(DagView)
            if dag.model is not self.model:  # moved back: another model, the same step stays selected
                keep = dag.selected if dag.user_moved else ""
                dag.set_model(self.model)
                if keep:
                    dag.select(keep)
        super()._refresh_views()

    def _tick(self) -> None:
        if self.player.playing:  # paused, the recorded clock stands still: nothing to redraw
            super()._tick()

    def _update_timeline(self) -> None:
        try:
            self.query_one("#timeline", Static).update(timeline_text(self.replay), layout=False)  # one line
        except Exception:  # the app is closing, or a modal screen is up
            pass


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
