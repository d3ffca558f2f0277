"""The build graph: nodes layered by depth inside their stages, edges as input references, drawn lazily."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from workbench.progress.trace import ACTIVE, CACHED, CANCELED, DONE, FAILED, PENDING, RUNNING, paused_label
from workbench.tui.model import SYMBOLS, BuildModel, VertexState


@dataclass(frozen=True)
class Row:
    """One line of the view: a stage header (`vertex` empty) or a node."""

    stage: str
    vertex: str = ""
    depth: int = 0


def short_name(name: str) -> str:
    """The name without its stage (the stage header shows it): `[build 2/4] RUN x` -> `[2/4] RUN x`."""
    if name.startswith("[") and not name.startswith("[internal]"):
        label, sep, rest = name.partition("]")
        return "[" + label.rsplit(" ", 1)[-1].lstrip("[") + sep + rest if sep else name
    return name


def format_timing(v: VertexState, now: float) -> str:
    """Its run time (a debugger's pauses left out: `format_paused` shows them), or its end state."""
    if v.state in ACTIVE and v.started is not None:
        return f"{max(0.0, v.run_time(now)):.1f}s"
    if v.state == DONE and v.duration is not None:
        return f"{v.duration:.2f}s"
    return {CACHED: "CACHED", FAILED: "ERROR", CANCELED: "CANCELED", PENDING: ""}.get(v.state, "")


def format_paused(v: VertexState, now: float) -> str:
    """`paused 40s` for a step the debugger holds or held (empty for the others)."""
    held = v.paused_for(now)
    return paused_label(held) if held or v.paused_since is not None else ""


class DagView(ScrollView, can_focus=True):
    """Keyboard-navigable graph of the build; posts `NodeSelected` when the cursor moves to another node."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor(-10)", "Page up", show=False),
        Binding("pagedown", "cursor(10)", "Page down", show=False),
        Binding("home,g", "cursor_to(0)", "First", show=False),
        Binding("end,G", "cursor_to(-1)", "Last", show=False),
        Binding("left,h", "follow_edge('input')", "To input", show=False),
        Binding("right,l", "follow_edge('dependent')", "To dependent", show=False),
        Binding("enter,space", "toggle_stage", "Fold stage", show=False),
        Binding("z", "fold_all", "Fold all", show=False),
        Binding("x", "next_failed", "Next error", show=False),
    ]
    COMPONENT_CLASSES = {"dag--pending", "dag--running", "dag--paused", "dag--cached", "dag--done", "dag--failed",
                         "dag--stage", "dag--cursor", "dag--edge"}
    DEFAULT_CSS = """
    DagView { background: $surface; overflow-x: hidden; }
    DagView > .dag--pending { color: $dag-pending; }
    DagView > .dag--running { color: $dag-running; text-style: bold; }
    DagView > .dag--paused { color: $dag-running; text-style: bold italic; }
    DagView > .dag--cached { color: $dag-cached; }
    DagView > .dag--done { color: $success; }
    DagView > .dag--failed { color: $error; text-style: bold; }
    DagView > .dag--stage { color: $secondary; text-style: bold; }
    DagView > .dag--edge { color: $foreground-muted; }
    DagView > .dag--cursor { background: $primary 35%; }
    DagView:focus > .dag--cursor { background: $primary 60%; }
    """

    class NodeSelected(Message):
        """The cursor is on another node (`vertex` empty: on a stage header)."""

        def __init__(self, vertex: str) -> None:
            super().__init__()
            self.vertex = vertex

    def __init__(self, model: BuildModel, clock: Callable[[], float] = time.time, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model = model
        self.clock = clock
        self.rows: list[Row] = []
        self.cursor = 0
        self.folded: set[str] = set()
        self.user_moved = False
        """Once the user moves the cursor it stays put; until then it follows the build."""
        self._revision = -1
        self._selected = ""
        self._stage_counts: dict[str, str] = {}

    # -- data -----------------------------------------------------------------------------------------

    def set_model(self, model: BuildModel) -> None:
        self.model = model
        self._revision = -1
        self.cursor = 0
        self.user_moved = False
        self.refresh_rows()

    def refresh_rows(self, force: bool = False) -> None:
        """Rebuild the rows when the graph changed; keeps the cursor on the same node."""
        if self.model.revision == self._revision and not force:
            self.refresh()
            return
        self._revision = self.model.revision
        keep = self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None
        self.rows = self._layout()
        self._stage_counts = self._count_stages()
        if keep is not None and keep in self.rows and self.user_moved:
            self.cursor = self.rows.index(keep)
        elif not self.user_moved:
            self.cursor = self._follow_target()
        self.cursor = max(0, min(self.cursor, len(self.rows) - 1))
        width = max((len(self._text(r)) for r in self.rows[:2000]), default=0) + 12  # and the timing
        self.virtual_size = Size(width, len(self.rows))
        if not self.user_moved:
            self.call_after_refresh(self.scroll_to_region_row, self.cursor)
        self._announce()
        self.refresh()

    def _layout(self) -> list[Row]:
        model = self.model
        depth = model.depth()
        stages: dict[str, list[str]] = {}
        for vid in model.order:
            stages.setdefault(model.vertices[vid].stage, []).append(vid)
        rows: list[Row] = []
        for stage, vids in stages.items():
            rows.append(Row(stage))
            if stage in self.folded:
                continue
            base = min(depth[v] for v in vids)
            for vid in sorted(vids, key=lambda v: (depth[v], model.vertices[v].number)):
                rows.append(Row(stage, vid, depth[vid] - base))
        return rows

    def _follow_target(self) -> int:
        model = self.model
        failed = model.first_failed()
        running = model.running()
        target = failed or (running[-1] if running else None)
        if target is None and model.order:
            target = model.vertices[model.order[-1]]
        if target is None:
            return 0
        for n, row in enumerate(self.rows):
            if row.vertex == target.id:
                return n
        return 0

    @property
    def selected(self) -> str:
        """The vertex under the cursor ("" on a stage header or when empty)."""
        if 0 <= self.cursor < len(self.rows):
            return self.rows[self.cursor].vertex
        return ""

    def select(self, vertex: str) -> None:
        """Put the cursor on `vertex` (unfolding its stage) and stop following the build."""
        v = self.model.vertices.get(vertex)
        if v is None:
            return
        if v.stage in self.folded:
            self.folded.discard(v.stage)
            self.refresh_rows(force=True)
        for n, row in enumerate(self.rows):
            if row.vertex == vertex:
                self._move(n)
                return

    def _announce(self) -> None:
        if self.selected != self._selected:
            self._selected = self.selected
            self.post_message(self.NodeSelected(self._selected))

    # -- drawing --------------------------------------------------------------------------------------

    def _count_stages(self) -> dict[str, str]:
        """Per stage, `finished/total[, N failed]` (once per graph change, not per drawn line)."""
        tally: dict[str, list[int]] = {}
        for v in self.model.vertices.values():
            t = tally.setdefault(v.stage, [0, 0, 0])
            t[0] += v.state in (DONE, CACHED)
            t[1] += 1
            t[2] += v.state == FAILED
        return {stage: f"{f}/{n}" + (f", {bad} failed" if bad else "") for stage, (f, n, bad) in tally.items()}

    def _counts(self, stage: str) -> str:
        return self._stage_counts.get(stage, "")

    def _text(self, row: Row) -> str:
        if not row.vertex:
            fold = "▸" if row.stage in self.folded else "▾"
            return f"{fold} stage {row.stage} ({self._counts(row.stage)})"
        v = self.model.vertices[row.vertex]
        depth = min(row.depth, 12)
        edge = " " * depth + "╰" if depth else " "  # the edge from its input, one layer up
        return f"{edge}{SYMBOLS[v.state]} #{v.number} {short_name(v.name)}"

    def _edges(self, v: VertexState) -> str:
        numbers = [f"#{self.model.vertices[i].number}" for i in v.inputs if i in self.model.vertices]
        return " ← " + " ".join(numbers[:6]) + (" …" if len(numbers) > 6 else "") if numbers else ""

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        row = self.rows[index]
        base = self.rich_style
        if not row.vertex:
            segments = [Segment(self._text(row), base + self.get_component_rich_style("dag--stage"))]
        else:
            v = self.model.vertices[row.vertex]
            state_style = base + self.get_component_rich_style(f"dag--{'failed' if v.state == CANCELED else v.state}")
            edge_style = base + self.get_component_rich_style("dag--edge")
            now = self.clock()
            timing = format_timing(v, now)
            text = self._text(row)
            head, _, name = text.partition(f"#{v.number} ")
            segments = [Segment(f"{head}#{v.number} {timing:>8} " if timing else f"{head}#{v.number} ", state_style)]
            paused = format_paused(v, now)
            if paused:  # beside its run time, before the name: seen in a narrow pane too
                segments.append(Segment(f"{paused} ", edge_style))
            segments.append(Segment(name, state_style))
            if v.status and v.state == RUNNING:
                segments.append(Segment(f"  {v.status}", edge_style))
            segments.append(Segment(self._edges(v), edge_style))
        strip = Strip(segments).crop(scroll_x, scroll_x + width).extend_cell_length(width, base)
        if index == self.cursor:
            cursor: Style = self.get_component_rich_style("dag--cursor")
            strip = strip.apply_style(cursor)
        return strip

    # -- navigation -----------------------------------------------------------------------------------

    def _move(self, index: int) -> None:
        if not self.rows:
            return
        self.user_moved = True
        self.cursor = max(0, min(index, len(self.rows) - 1))
        self.scroll_to_region_row(self.cursor)
        self._announce()
        self.refresh()

    def scroll_to_region_row(self, index: int) -> None:
        top = self.scroll_offset.y
        height = max(1, self.size.height)
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + height:
            self.scroll_to(y=index - height + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_cursor_to(self, index: int) -> None:
        self._move(index if index >= 0 else len(self.rows) - 1)

    def action_follow_edge(self, direction: str) -> None:
        v = self.model.vertices.get(self.selected)
        if v is None:
            return
        if direction == "input":
            targets = [i for i in v.inputs if i in self.model.vertices]
        else:
            targets = [w.id for w in self.model.vertices.values() if v.id in w.inputs]
        if targets:
            self.select(targets[0])

    def action_toggle_stage(self) -> None:
        if not self.rows:
            return
        stage = self.rows[self.cursor].stage
        self.folded.symmetric_difference_update({stage})
        self.user_moved = True
        self.refresh_rows(force=True)
        self._move(self.rows.index(Row(stage)))

    def action_fold_all(self) -> None:
        """Fold every stage (fit a big graph on screen), or unfold all when all are folded."""
        stages = {r.stage for r in self.rows}
        self.folded = set() if stages <= self.folded else stages
        self.refresh_rows(force=True)

    def action_next_failed(self) -> None:
        failed = [vid for vid in self.model.order if self.model.vertices[vid].state == FAILED]
        if failed:
            after = [f for f in failed if self.model.vertices[f].number > self.model.vertices.get(
                self.selected, self.model.vertices[failed[-1]]).number]
            self.select((after or failed)[0])

    def on_click(self, event: events.Click) -> None:
        self.focus()
        self._move(self.scroll_offset.y + event.y)
