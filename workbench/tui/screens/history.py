"""`H`: the past builds of this Dockerfile, as `workbench history ls` lists them; replay one, compare two.

enter replays the build under the cursor (workbench.tui.screens.replay, over the live app, which goes on);
space marks a build, `c` compares the two marked (or the one under the cursor with the build before it) step
by step, side by side (workbench.history.diff). Records are read by workers: a long history never holds keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from workbench.history.diff import ABSENT, StepChange, outcome, side_by_side
from workbench.history.report import counts, duration, seconds, when
from workbench.history.steps import RecordedStep
from workbench.history.store import HistoryError, RecordedSession, list_sessions, load_session
from workbench.progress.trace import CACHED

MARK = "●"
_DIGEST = re.compile(r"@sha256:[0-9a-f]{12,}")
STATE_STYLES = {"cached": "green", "ran": "yellow", "failed": "bold red", "canceled": "magenta", ABSENT: "dim"}


@dataclass(frozen=True)
class BuildRow:
    """One past build as the list shows it (the step counts as `history ls` gives them: every vertex)."""

    id: str
    path: Path
    when: str
    result: str
    duration: str
    total: int
    cached: int
    failed: int
    target: str


def build_rows(history: Path, dockerfile: Path | None) -> list[BuildRow]:
    """The builds recorded under `history`, newest first; only those of `dockerfile` when given."""
    wanted = dockerfile.resolve() if dockerfile is not None else None
    rows = []
    for s in list_sessions(history):
        recorded = s.meta.get("dockerfile")
        if wanted is not None and (not recorded or Path(str(recorded)).resolve() != wanted):
            continue
        c = counts(s)
        rows.append(BuildRow(s.id, s.path, when(s.started), s.status, seconds(duration(s)), c["total"],
                             c["cached"], c["failed"], str(s.meta.get("target") or "-")))
    return rows


class HistoryLoaded(Message):
    """The list of past builds was read (by a worker)."""

    def __init__(self, rows: list[BuildRow], error: str = "") -> None:
        super().__init__()
        self.rows, self.error = rows, error


class SessionLoaded(Message):
    """The builds asked for were read with their events: one to replay, or two to compare."""

    def __init__(self, sessions: list[RecordedSession], rows: list[StepChange] | None = None,
                 error: str = "") -> None:
        super().__init__()
        self.sessions, self.rows, self.error = sessions, rows, error


class HistoryScreen(ModalScreen[None]):
    """The recorded builds of `dockerfile` under `root` (every build when None), newest first."""

    CSS_PATH = "history.tcss"
    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("enter", "replay", "Replay"),
        Binding("space,m", "mark", "Mark", tooltip="mark a build to compare (two at most)"),
        Binding("c", "compare", "Compare", tooltip="the two marked builds, or this one with the one before"),
    ]

    def __init__(self, root: Path, dockerfile: Path | None) -> None:
        super().__init__()
        self.history = root / "history"
        self.dockerfile = dockerfile
        self.rows: list[BuildRow] = []
        self.marked: list[str] = []
        """Ids of the marked builds, in the order they were marked."""

    def compose(self) -> ComposeResult:
        with Vertical(id="history-box"):
            yield Static(self._title(), id="history-title")
            yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
            yield Static("reading the build history…", id="history-note")
        yield Footer()

    def _title(self) -> str:
        of = f" of {self.dockerfile.name}" if self.dockerfile is not None else ""
        return (f"[b]history[/]{of} — newest first · enter replays · space marks · c compares "
                "(the marked two, or this build with the one before) · esc closes")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(" ", "BUILD ID", "CREATED AT", "STATUS", "DURATION", "STEPS", "CACHED", "FAILED",
                          "TARGET")
        table.focus()
        self._load()

    @work(thread=True, exclusive=True, group="history-list")
    def _load(self) -> None:
        try:
            self.post_message(HistoryLoaded(build_rows(self.history, self.dockerfile)))
        except (OSError, HistoryError) as e:
            self.post_message(HistoryLoaded([], f"cannot read {self.history}: {e}"))

    @on(HistoryLoaded)
    def _loaded(self, event: HistoryLoaded) -> None:
        self.rows = event.rows
        table = self.query_one(DataTable)
        table.clear()
        for r in self.rows:
            table.add_row(self._mark(r.id), r.id[:12], r.when, self._result(r.result), r.duration, str(r.total),
                          str(r.cached), str(r.failed), r.target, key=r.id)
        note = event.error or (f"{len(self.rows)} build(s) recorded" if self.rows else
                               f"no build of this Dockerfile is recorded in {self.history}")
        self.query_one("#history-note", Static).update(note)

    def _mark(self, ident: str) -> str:
        return MARK if ident in self.marked else " "

    @staticmethod
    def _result(status: str) -> Text:
        style = {"completed": "green", "error": "bold red", "canceled": "magenta", "running": "yellow"}
        return Text(status, style=style.get(status, "dim"))

    def cursor_row(self) -> BuildRow | None:
        """The build under the cursor."""
        table = self.query_one(DataTable)
        n = table.cursor_row
        return self.rows[n] if 0 <= n < len(self.rows) else None

    # -- actions --------------------------------------------------------------------------------------

    def action_close(self) -> None:
        self.dismiss(None)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_replay()

    def action_replay(self) -> None:
        row = self.cursor_row()
        if row is not None:
            self.query_one("#history-note", Static).update(f"loading {row.id} …")
            self._read([row.path])

    def action_mark(self) -> None:
        row = self.cursor_row()
        if row is None:
            return
        if row.id in self.marked:
            self.marked.remove(row.id)
        else:
            self.marked = [*self.marked, row.id][-2:]
        table = self.query_one(DataTable)
        for r in self.rows:
            table.update_cell(r.id, table.ordered_columns[0].key, self._mark(r.id))
        self.query_one("#history-note", Static).update(
            f"marked: {', '.join(i[:12] for i in self.marked)}" if self.marked else "nothing marked")

    def compare_pair(self) -> tuple[BuildRow, BuildRow] | None:
        """(A, B), the older first: the two marked; one marked and the cursor's; or the cursor's and the build
        before it."""
        by_id = {r.id: r for r in self.rows}
        picked = [by_id[i] for i in self.marked if i in by_id]
        row = self.cursor_row()
        if len(picked) < 2 and row is not None:
            if picked and picked[0] is not row:
                picked.append(row)
            elif not picked:
                n = self.rows.index(row)
                picked = [row, self.rows[n + 1]] if n + 1 < len(self.rows) else []
        if len(picked) < 2:
            return None
        a, b = sorted(picked[:2], key=self.rows.index, reverse=True)  # the list is newest first
        return a, b

    def action_compare(self) -> None:
        pair = self.compare_pair()
        if pair is None:
            self.notify("mark two builds with space (or put the cursor on a build that has one before it)",
                        timeout=3)
            return
        self.query_one("#history-note", Static).update(f"comparing {pair[0].id[:12]} → {pair[1].id[:12]} …")
        self._read([pair[0].path, pair[1].path])

    @work(thread=True, exclusive=True, group="history-read")
    def _read(self, paths: list[Path]) -> None:
        try:
            sessions = [load_session(p) for p in paths]
            rows = side_by_side(*sessions) if len(sessions) == 2 else None
        except (OSError, HistoryError) as e:
            self.post_message(SessionLoaded([], error=str(e)))
            return
        self.post_message(SessionLoaded(sessions, rows))

    @on(SessionLoaded)
    def _session_loaded(self, event: SessionLoaded) -> None:
        from workbench.tui.screens.replay import ReplayScreen

        if event.error:
            self.query_one("#history-note", Static).update(event.error)
            return
        self.query_one("#history-note", Static).update(f"{len(self.rows)} build(s) recorded")
        if len(event.sessions) == 1:
            self.app.switch_screen(ReplayScreen(event.sessions[0]))  # esc there returns to the live view
        elif len(event.sessions) == 2 and event.rows is not None:
            self.app.push_screen(CompareScreen(event.sessions[0], event.sessions[1], event.rows))


def step_label(name: str, width: int = 64) -> str:
    """A step's name for a column: image digests left out, cut at `width` characters."""
    name = _DIGEST.sub("", name)
    return name if len(name) <= width else name[:width - 1] + "…"


def _state(st: RecordedStep | None) -> Text:
    label = outcome(st)
    return Text(label, style=STATE_STYLES.get(label, ""))


def _time(st: RecordedStep | None) -> str:
    if st is None or st.state == CACHED or st.started is None:
        return "-"
    return seconds(st.elapsed) + (" (paused)" if st.paused else "")


class CompareScreen(ModalScreen[None]):
    """Two builds side by side, step by step: the state in each, the run times, and why B's state is what it
    is; the steps whose state changed in bold."""

    CSS_PATH = "history.tcss"
    BINDINGS = [Binding("escape,q", "close", "Back to the list")]

    def __init__(self, a: RecordedSession, b: RecordedSession, rows: list[StepChange]) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.rows = rows
        """`workbench.history.diff.side_by_side(a, b)`."""

    def compose(self) -> ComposeResult:
        changed = sum(1 for r in self.rows if r.changed)
        with Vertical(id="compare-box"):
            yield Static(f"[b]compare[/]  A: {self.a.id[:12]} {when(self.a.started)}   →   "
                         f"B: {self.b.id[:12]} {when(self.b.started)}\n"
                         f"{changed} step(s) changed cache state, {len(self.rows) - changed} the same",
                         id="compare-title")
            yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("STEP", "A", "B", "A TIME", "B TIME", "WHY")
        for r in self.rows:
            name = Text(step_label(r.name), style="bold" if r.changed else "")
            table.add_row(name, _state(r.a), _state(r.b), _time(r.a), _time(r.b), r.why)
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
