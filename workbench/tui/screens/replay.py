"""A recorded build replayed inside the live app (from the history screen): graph, logs and the timeline.

The live build goes on underneath, untouched (its events still fold into the app's own model); this screen
folds the recording into a model of its own with a ReplayPlayer, so `esc` returns to the live view as it is.
The timeline keys are `workbench replay`'s.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from workbench.history.store import RecordedSession
from workbench.progress.replay import EventSource
from workbench.progress.trace import CACHED, DONE, FAILED, RUNNING
from workbench.tui.model import BuildModel
from workbench.tui.replay_player import REPLAY_BINDINGS, ReplayKeys, ReplayPlayer, timeline_text
from workbench.tui.widgets.dag_view import DagView
from workbench.tui.widgets.log_pane import LogPane


def replay_status(session: RecordedSession, model: BuildModel) -> str:
    """`replay 2tanaq99xozo · finished in 1.8s · 11 done`: the recording, where its build stands at this point."""
    fin = model.finished
    if fin is None:
        state = "running" if model.vertices else "starting"
    elif fin.error:
        state = "canceled" if fin.error == "canceled" else f"failed after {fin.duration:.1f}s"
    else:
        state = f"finished in {fin.duration:.1f}s"
    counts = model.counts()
    tally = " ".join(f"{counts[key]} {label}" for key, label in ((RUNNING, "running"), (CACHED, "cached"),
                                                                 (DONE, "done"), (FAILED, "failed"))
                     if counts.get(key))
    return " · ".join(p for p in (f"[b]replay[/] {session.id[:12]}", state, tally) if p)


class ReplayScreen(ReplayKeys, ModalScreen[None]):
    """The recording `session` played from its start at `speed` over the live app; esc goes back to it."""

    CSS_PATH = "history.tcss"
    BINDINGS = [Binding("escape,q", "close", "Back to the live build"), *REPLAY_BINDINGS]

    def __init__(self, session: RecordedSession, speed: float = 1.0) -> None:
        super().__init__()
        self.session = session
        self.replay = EventSource(session.events, speed=speed)
        self.player = ReplayPlayer(self.replay, self._replayed)

    def compose(self) -> ComposeResult:
        with Vertical(id="replay-box"):
            yield Static(replay_status(self.session, self.player.model), id="replay-status")
            with Horizontal(id="replay-main"):
                yield DagView(self.player.model, clock=self.player.now, id="replay-dag")
                yield LogPane(id="replay-logs")
            yield Static(timeline_text(self.replay), id="replay-timeline")
        yield Footer()

    def on_mount(self) -> None:
        dag = self.query_one(DagView)
        dag.border_title = f"replay of {self.session.id}"
        dag.focus()
        self.player.attach(self)

    def _replayed(self, replaced: bool) -> None:
        model = self.player.model
        dag = self.query_one(DagView)
        if replaced or dag.model is not model:
            keep = dag.selected if dag.user_moved else ""
            dag.set_model(model)
            if keep:
                dag.select(keep)
        else:
            dag.refresh_rows()
        self._show_selected()
        # both one fixed line: no re-layout of the screen on every move
        self.query_one("#replay-status", Static).update(replay_status(self.session, model), layout=False)
        self.query_one("#replay-timeline", Static).update(timeline_text(self.replay), layout=False)

    @on(DagView.NodeSelected)
    def _node_selected(self, event: DagView.NodeSelected) -> None:
        event.stop()  # the live app's own handler would show its build's step here
        self._show_selected()

    def _show_selected(self) -> None:
        model = self.player.model
        self.query_one(LogPane).show(model, model.vertices.get(self.query_one(DagView).selected))

    def action_close(self) -> None:
        self.dismiss(None)
