"""The build graph in lanes (`progress.graph_layout`): a stage's steps down one lane, forks and merges where
stages read each other, the critical path, breakpoints and predicted re-runs marked; drawn lazily, a line at a time."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from workbench.progress.graph_layout import GraphNode, GraphRow, critical_path, layout, short_name
from workbench.progress.trace import ACTIVE, CACHED, CANCELED, DONE, ENDED, FAILED, PENDING, RUNNING, paused_label
from workbench.tui.model import SYMBOLS, BuildModel, VertexState


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


CRITICAL = "◆"
"""Marks a step on the critical path (the chain of steps whose run times add up to the build's)."""
BREAKPOINT = "●"
"""In the gutter: a breakpoint on the step's Dockerfile line."""
PREDICTED = "↻"
"""Before the reason the next build will re-run the step (predicted from the cache keys)."""
RIGHT = 11
"""Cells of the right-hand column: a duration (right-aligned) and the critical path's mark."""
LAYOUT_INTERVAL_S = 0.2
"""While a build runs, the graph is laid out again at most this often (its lines redraw in between)."""


def graph_nodes(model: BuildModel) -> list[GraphNode]:
    """The model's steps as the layout takes them (inputs it never saw left out: a hidden `COPY --link` merge)."""
    vertices = model.vertices
    nodes = []
    for vid in model.order:
        v = vertices[vid]
        nodes.append(GraphNode(vid, v.stage, tuple(i for i in v.inputs if i in vertices), _duration(v)))
    return nodes


def _duration(v: VertexState) -> float:
    if v.duration is not None:
        return v.duration
    return v.elapsed if v.state in ENDED else 0.0


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
                         "dag--stage", "dag--cursor", "dag--edge", "dag--critical", "dag--breakpoint", "dag--predicted"}
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
    DagView > .dag--critical { color: $warning; text-style: bold; }
    DagView > .dag--breakpoint { color: $error; text-style: bold; }
    DagView > .dag--predicted { color: $warning; }
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
        self.rows: list[GraphRow] = []
        self.cursor = 0
        self.folded: set[str] = set()
        self.user_moved = False
        """Once the user moves the cursor it stays put; until then it follows the build."""
        self.critical: frozenset[str] = frozenset()
        """The steps on the critical path (marked `CRITICAL`)."""
        self.breakpoints: set[int] = set()
        """Dockerfile lines (from 1) with a breakpoint: their steps get `BREAKPOINT` in the gutter."""
        self._revision = -1
        self._selected = ""
        self._stage_counts: dict[str, str] = {}
        self._members: dict[str, list[VertexState]] = {}
        self._base = Style()
        self._laid_out = 0.0
        self._layout_due = False
        self._steps: list[GraphNode] = []
        self._layouts: dict[frozenset[str], list[GraphRow]] = {}

    # -- data -----------------------------------------------------------------------------------------

    def set_model(self, model: BuildModel) -> None:
        self.model = model
        self._revision = -1
        self.cursor = 0
        self.user_moved = False
        self.refresh_rows(force=True)

    def set_breakpoints(self, lines: set[int]) -> None:
        """Mark the steps whose Dockerfile start line (from 1) is in `lines`."""
        if lines != self.breakpoints:
            self.breakpoints = set(lines)
            self.refresh()

    def refresh_rows(self, force: bool = False) -> None:
        """Lay the graph out again when it changed; keeps the cursor on the same node."""
        if self.model.revision == self._revision and not force:
            self.refresh()
            return
        wait = self._laid_out + LAYOUT_INTERVAL_S - time.monotonic()
        if not force and wait > 0 and self.model.finished is None:  # a busy build: a new layout now and then
            if not self._layout_due:
                self._layout_due = True
                self.set_timer(wait, self._deferred_layout)
            self.refresh()
            return
        self._laid_out = time.monotonic()
        keep = self._key(self.cursor)
        if self.model.revision != self._revision:  # else only the folds changed
            self._revision = self.model.revision
            self._steps = graph_nodes(self.model)
            chain, total = critical_path(self._steps)
            self.critical = frozenset(chain)
            self.border_subtitle = f"{CRITICAL} critical path {total:.2f}s" if chain else ""
            self._stage_counts = self._count_stages()
            self._members = {}
            for v in self.model.vertices.values():
                self._members.setdefault(v.stage, []).append(v)
            self._layouts = {}
        folds = frozenset(self.folded)
        if folds not in self._layouts:  # kept while the graph stays: folding back and forth is quick
            self._layouts[folds] = layout(self._steps, folds).rows
        self.rows = self._layouts[folds]
        keys = [(r.stage, r.vertex) for r in self.rows]
        if keep is not None and keep in keys and self.user_moved:
            self.cursor = keys.index(keep)
        elif not self.user_moved:
            self.cursor = self._follow_target()
        self.cursor = max(0, min(self.cursor, len(self.rows) - 1))
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.rows))  # no sideways scroll
        if not self.user_moved:
            self.call_after_refresh(self.scroll_to_region_row, self.cursor)
        self._announce()
        self.refresh()

    def _deferred_layout(self) -> None:
        self._layout_due = False
        self.refresh_rows()

    def _key(self, index: int) -> tuple[str, str] | None:
        return (self.rows[index].stage, self.rows[index].vertex) if 0 <= index < len(self.rows) else None

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
        for attempt in range(2):
            for n, row in enumerate(self.rows):
                if row.vertex == vertex:
                    self._move(n)
                    return
            if not attempt:  # not laid out yet (a busy build's layouts come at intervals)
                self.refresh_rows(force=True)

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

    def _has_breakpoint(self, v: VertexState) -> bool:
        return v.source is not None and v.source.start_line in self.breakpoints

    def _style(self, name: str) -> Style:
        return self._base + self.get_component_rich_style(name)

    def _lanes(self, row: GraphRow, glyph: str, glyph_style: Style, width: int) -> list[Segment]:
        """The row's lane cells with `glyph` in its own; a graph wider than half the view is cut there (`…`)."""
        cells = row.cells.rstrip()
        at = 2 * row.lane
        edge = self._style("dag--edge")
        room = max(4, width // 2)
        if len(cells) > room:
            if at + 1 >= room:  # its own lane is cut off: the glyph comes after the cut
                return [Segment(cells[:room - 1] + "…", edge), Segment(glyph, glyph_style)]
            cells = cells[:room - 1] + "…"
        return [Segment(cells[:at], edge), Segment(glyph, glyph_style), Segment(cells[at + 1:], edge)]

    def render_line(self, y: int) -> Strip:
        scroll_y = self.scroll_offset.y
        index = scroll_y + y
        width = self.scrollable_content_region.width  # the right-hand column clear of the scrollbar
        base = self._base = self.rich_style  # once a line: it walks the widget's ancestors
        if index >= len(self.rows):
            return Strip.blank(width, base)
        row = self.rows[index]
        if not row.vertex:
            left, right = self._header(row, width)
        else:
            left, right = self._node(row, width)
        strip = _fit(left, right, width, base)
        if index == self.cursor:
            strip = strip.apply_style(self.get_component_rich_style("dag--cursor"))
        return strip

    def _header(self, row: GraphRow, width: int) -> tuple[list[Segment], list[Segment]]:
        members = self._members.get(row.stage, []) if row.stage in self.folded else []
        marked = any(self._has_breakpoint(v) for v in members)
        fold = "▸" if row.stage in self.folded else "▾"
        stage_style = self._style("dag--stage")
        left = [Segment(BREAKPOINT if marked else " ", self._style("dag--breakpoint"))]
        left += self._lanes(row, fold, stage_style, width)
        left.append(Segment(f" stage {row.stage} ({self._counts(row.stage)})", stage_style))
        critical = any(v.id in self.critical for v in members)
        right = [Segment(f" {CRITICAL}", self._style("dag--critical"))] if critical else []
        return left, right

    def _node(self, row: GraphRow, width: int) -> tuple[list[Segment], list[Segment]]:
        v = self.model.vertices[row.vertex]
        state_style = self._style(f"dag--{'failed' if v.state == CANCELED else v.state}")
        edge_style = self._style("dag--edge")
        now = self.clock()
        left = [Segment(BREAKPOINT if self._has_breakpoint(v) else " ", self._style("dag--breakpoint"))]
        left += self._lanes(row, SYMBOLS[v.state], state_style, width)
        left.append(Segment(f" #{v.number} ", state_style))
        paused = format_paused(v, now)
        if paused:  # before the name: seen in a narrow pane too
            left.append(Segment(f"{paused} ", edge_style))
        left.append(Segment(short_name(v.name), state_style))
        if v.status and v.state == RUNNING:
            left.append(Segment(f"  {v.status}", edge_style))
        numbers = [f"#{self.model.vertices[i].number}" for i in row.undrawn if i in self.model.vertices]
        if numbers:  # inputs no lane reaches (stages reading each other both ways)
            left.append(Segment(" ← " + " ".join(numbers[:6]) + (" …" if len(numbers) > 6 else ""), edge_style))
        predicted: dict[str, str] = getattr(self.model, "predicted", {})
        if v.id in predicted:
            reason = predicted[v.id] or "will run again"
            room = max(RIGHT, width // 2) - 3
            if cell_len(reason) > room:
                reason = reason[:room - 1] + "…"
            return left, [Segment(f" {PREDICTED} ", self._style("dag--predicted")), Segment(reason, edge_style)]
        timing = format_timing(v, now)
        critical = v.id in self.critical
        right = [Segment(f" {timing:>8} ", self._style("dag--critical") if critical else state_style),
                 Segment(CRITICAL if critical else " ", self._style("dag--critical"))]
        return left, right

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
        self._move(next(n for n, r in enumerate(self.rows) if r.stage == stage and not r.vertex))

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


def _fit(left: list[Segment], right: list[Segment], width: int, style: Style) -> Strip:
    """`left` then `right` against the right edge: `left` cut (`…`) where both do not fit."""
    tail = Strip(right)
    room = max(0, width - tail.cell_length)
    head = Strip(left)
    if head.cell_length > room:
        head = Strip([*head.crop(0, max(0, room - 1)), Segment("…", style)]) if room else Strip([])
    return Strip([*head.extend_cell_length(room, style), *tail]).crop(0, width).extend_cell_length(width, style)
