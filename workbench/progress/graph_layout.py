"""The build graph laid out in lanes, as `git log --graph` or tig draw history: one lane per stage, a stage's
steps straight down it, forks where stages branch off another, merges where `COPY --from` / `--mount=from` join;
and its critical path (the chain of steps whose durations add up to the most). Pure: the TUI's graph and
`workbench inspect graph` draw from it."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

NODE = "*"
"""What a node's own lane cell holds in `GraphRow.cells` (a view puts its state symbol there)."""
HEADER = "▾"
"""What a stage header's lane cell holds (a view may put its fold mark there)."""

_U, _D, _L, _R = 1, 2, 4, 8
_GLYPHS = {
    _U: "│", _D: "│", _U | _D: "│", _L: "─", _R: "─", _L | _R: "─", _U | _D | _L | _R: "┼",
    _U | _L: "╯", _U | _R: "╰", _D | _L: "╮", _D | _R: "╭",
    _U | _D | _L: "┤", _U | _D | _R: "├", _L | _R | _U: "┴", _L | _R | _D: "┬",
}


@dataclass(frozen=True)
class GraphNode:
    """A step: its id, its stage, the ids of its inputs and how long it ran (0 when unknown or cached)."""

    id: str
    stage: str
    inputs: tuple[str, ...] = ()
    duration: float = 0.0


@dataclass(frozen=True)
class GraphRow:
    """One line of the graph: a stage's header (`vertex` empty) or a step, with its lane cells drawn."""

    stage: str
    vertex: str = ""
    cells: str = ""
    """Two cells per lane (up to its last lane in use); its own cell (at `2 * lane`) holds `NODE` or `HEADER`."""
    lane: int = 0
    undrawn: tuple[str, ...] = ()
    """Inputs no line reaches (shown below it, or in a folded stage's later part): a view names them."""


@dataclass
class GraphLayout:
    """The rows in drawing order and the number of lanes."""

    rows: list[GraphRow] = field(default_factory=list)
    lanes: int = 0


@dataclass
class _Column:
    stage: str = ""
    """The stage whose steps still come down this lane ("" for a pipe)."""
    source: int = -1
    """The row whose output flows down it (a stage's lane: its last step drawn so far)."""
    waiting: set[int] = field(default_factory=set)
    """The rows below that still take that output (a pipe ends at the last)."""


def short_name(name: str) -> str:
    """The name without its stage (the stage header shows it): `[build 2/4] RUN x` -> `[2/4] RUN x`."""
    if name.startswith("[") and not name.startswith("[internal]"):
        label, sep, rest = name.partition("]")
        return "[" + label.rsplit(" ", 1)[-1].lstrip("[") + sep + rest if sep else name
    return name


def stage_order(nodes: Sequence[GraphNode]) -> list[str]:
    """The stages, each after the stages it reads from (else in order of first appearance)."""
    first: dict[str, int] = {}
    for n, node in enumerate(nodes):
        first.setdefault(node.stage, n)
    stage_of = {node.id: node.stage for node in nodes}
    needs: dict[str, set[str]] = {s: set() for s in first}
    for node in nodes:
        needs[node.stage].update(stage_of[i] for i in node.inputs if i in stage_of and stage_of[i] != node.stage)
    return _topological(list(first), needs)


def _topological(items: list[str], needs: dict[str, set[str]]) -> list[str]:
    """`items` ordered so each comes after what it needs, stable (a cycle broken at its earliest item)."""
    rank = {item: n for n, item in enumerate(items)}
    left = {item: len(needs[item] & rank.keys()) for item in items}
    users: dict[str, list[str]] = {item: [] for item in items}
    for item in items:
        for need in needs[item] & rank.keys():
            users[need].append(item)
    ready = [rank[item] for item in items if not left[item]]
    heapq.heapify(ready)
    out: list[str] = []
    done: set[str] = set()
    while len(out) < len(items):
        if not ready:  # a cycle: take the earliest item not placed yet
            heapq.heappush(ready, min(rank[item] for item in items if item not in done))
        item = items[heapq.heappop(ready)]
        if item in done:
            continue
        done.add(item)
        out.append(item)
        for user in users[item]:
            left[user] -= 1
            if left[user] == 0 and user not in done:
                heapq.heappush(ready, rank[user])
    return out


def critical_path(nodes: Sequence[GraphNode]) -> tuple[list[str], float]:
    """The chain of steps (inputs first) whose durations add up to the most, and that sum; none when no step
    has a duration."""
    nodes = _inputs_first(nodes)
    known = {node.id: node for node in nodes}
    total: dict[str, float] = {}
    via: dict[str, str] = {}
    for node in nodes:
        best, best_input = 0.0, ""
        for i in node.inputs:
            if i in total and (total[i] > best or not best_input):
                best, best_input = total[i], i
        total[node.id] = best + max(node.duration, 0.0)
        if best_input:
            via[node.id] = best_input
    if not total or max(total.values()) <= 0:
        return [], 0.0
    end = max(known, key=lambda i: total[i])  # the first of equals: stable
    chain = [end]
    while chain[-1] in via:
        chain.append(via[chain[-1]])
    return chain[::-1], total[end]


def _inputs_first(nodes: Sequence[GraphNode]) -> list[GraphNode]:
    seen: set[str] = set()
    for node in nodes:  # as a build reports them, they come inputs first already: nothing to sort
        if any(i not in seen for i in node.inputs):
            break
        seen.add(node.id)
    else:
        return list(nodes)
    known = {node.id for node in nodes}
    ids = [node.id for node in nodes]
    needs = {node.id: {i for i in node.inputs if i in known and i != node.id} for node in nodes}
    by_id = {node.id: node for node in nodes}
    return [by_id[i] for i in _topological(ids, needs)]


def layout(nodes: Sequence[GraphNode], folded: Collection[str] = ()) -> GraphLayout:
    """Lay `nodes` out: per stage (see `stage_order`) its header then its steps, inputs first; a folded stage
    is its header alone, standing for all its steps."""
    nodes = _inputs_first(nodes)
    by_stage: dict[str, list[GraphNode]] = {}
    for node in nodes:
        by_stage.setdefault(node.stage, []).append(node)
    items: list[tuple[str, list[GraphNode], bool]] = []  # (stage, members, header); a folded header has members
    row_of: dict[str, int] = {}
    for stage in stage_order(nodes):
        members = by_stage[stage]
        header = len(items)
        items.append((stage, members if stage in folded else [], True))
        for node in members:
            if stage in folded:
                row_of[node.id] = header
            else:
                row_of[node.id] = len(items)
                items.append((stage, [node], False))
    inputs: list[list[int]] = []
    upward: list[list[str]] = []
    users: list[list[int]] = [[] for _ in items]
    for n, (_, members, _) in enumerate(items):
        mine: list[int] = []
        up: list[str] = []
        for node in members:
            for i in node.inputs:
                if i not in row_of or row_of[i] == n or row_of[i] in mine:
                    continue
                if row_of[i] > n:  # only where stages read each other both ways
                    up.append(i)
                    continue
                mine.append(row_of[i])
                users[row_of[i]].append(n)
        inputs.append(mine)
        upward.append(up)
    drawing = _Drawing(items, inputs, users)
    rows = [drawing.row(n, upward[n]) for n in range(len(items))]
    return GraphLayout(rows, drawing.width)


class _Drawing:
    """Walks the rows top down, keeping which lane carries what, and draws each row's cells."""

    def __init__(self, items: list[tuple[str, list[GraphNode], bool]], inputs: list[list[int]],
                 users: list[list[int]]) -> None:
        self.items = items
        self.inputs = inputs
        self.users = users
        self.columns: list[_Column | None] = []
        self.lane_of: dict[str, int] = {}
        self.width = 0
        self.first_in_stage: dict[str, int] = {}
        self.last_in_stage: dict[str, int] = {}
        self.next_in_stage: dict[int, int] = {}
        for n, (stage, members, _) in enumerate(items):
            if members:  # the rows that stand for steps: a stage's steps, or its folded header
                if stage in self.last_in_stage:
                    self.next_in_stage[self.last_in_stage[stage]] = n
                self.first_in_stage.setdefault(stage, n)
                self.last_in_stage[stage] = n
        self.inherited: dict[int, int] = {}
        """A stage's first row -> the input whose lane the stage took over (drawn as one straight line)."""

    def row(self, n: int, undrawn: Iterable[str]) -> GraphRow:
        stage, members, header = self.items[n]
        above = self._active()
        ended: set[int] = set()  # lanes that stop at this row: none is reused before the next
        spans: list[tuple[int, int]] = []
        first = self.first_in_stage.get(stage, -1)
        if header:  # the stage's lane opens here, joined by what its first step reads
            lane = self._open_stage(stage, ended)
            if first >= 0:
                self._joins(first, lane, spans, ended)
        else:
            lane = self.lane_of[stage]
            if n != first:
                self._joins(n, lane, spans, ended)
        if members:
            self._outputs(n, lane, spans, ended)
        self.width = max(self.width, len(self.columns))
        cells = _draw(len(self.columns), above, self._active(), tuple(spans), lane, HEADER if header else NODE)
        return GraphRow(stage, "" if header else members[0].id, cells, lane, tuple(undrawn))

    def _active(self) -> int:
        """The lanes in use, as bits."""
        bits = 0
        for c, col in enumerate(self.columns):
            if col is not None:
                bits |= 1 << c
        return bits

    def _free(self, ended: set[int]) -> int:
        for c, col in enumerate(self.columns):
            if col is None and c not in ended:
                return c
        self.columns.append(None)
        return len(self.columns) - 1

    def _open_stage(self, stage: str, ended: set[int]) -> int:
        """At a stage's header: its lane, taken over from the input its first step alone still waits for (a
        stage FROM another goes on down that stage's lane), else a free one."""
        first = self.first_in_stage.get(stage, -1)
        lane = -1
        for i in self.inputs[first] if first >= 0 else []:
            lane = next((c for c, col in enumerate(self.columns) if col is not None and not col.stage
                         and col.source == i and col.waiting == {first}), -1)
            if lane >= 0:
                self.inherited[first] = i
                break
        if lane < 0:
            lane = self._free(ended)
        self.columns[lane] = _Column(stage=stage)
        self.lane_of[stage] = lane
        return lane

    def _joins(self, n: int, lane: int, spans: list[tuple[int, int]], ended: set[int]) -> None:
        """Lines into `lane` from the lanes carrying row `n`'s inputs (a lane ends with its last reader)."""
        own = self.columns[lane]
        assert own is not None
        for i in self.inputs[n]:
            if i == own.source or self.inherited.get(n) == i:
                continue  # straight down its own lane
            c = next((c for c, col in enumerate(self.columns) if col is not None and col.source == i
                      and n in col.waiting), -1)
            if c < 0:
                continue
            spans.append((lane, c))
            col = self.columns[c]
            assert col is not None
            col.waiting.discard(n)
            if not col.waiting and not col.stage:
                self.columns[c] = None
                ended.add(c)

    def _outputs(self, n: int, lane: int, spans: list[tuple[int, int]], ended: set[int]) -> None:
        """Where row `n`'s output goes: on down its stage's lane, and to other readers in a lane of its own
        (its stage's lane itself after the stage's last step)."""
        stage = self.items[n][0]
        rest = {u for u in self.users[n] if u != self.next_in_stage.get(n)}
        if self.last_in_stage.get(stage) == n:
            del self.lane_of[stage]
            self.columns[lane] = _Column(source=n, waiting=rest) if rest else None
            if not rest:
                ended.add(lane)
            return
        own = self.columns[lane]
        assert own is not None
        own.source = n
        if rest:  # a fork in mid-stage
            c = self._free(ended | {lane})
            self.columns[c] = _Column(source=n, waiting=rest)
            spans.append((lane, c))


@lru_cache(maxsize=4096)
def _draw(width: int, above: int, below: int, spans: tuple[tuple[int, int], ...], lane: int, glyph: str) -> str:
    """A row's cells: `above` / `below` the lanes in use before and after it (bits), `spans` its joins and forks
    (from one lane to another), its own lane holding `glyph`."""
    masks = [(_U if above >> c & 1 else 0) | (_D if below >> c & 1 else 0) for c in range(width)]
    joins = [False] * width  # the gap right of a lane has a line through it
    for a, b in spans:
        lo, hi = min(a, b), max(a, b)
        masks[lo] |= _R
        masks[hi] |= _L
        for c in range(lo + 1, hi):
            masks[c] |= _L | _R
        for c in range(lo, hi):
            joins[c] = True
    out = []
    for c in range(width):
        out.append(glyph if c == lane else _GLYPHS.get(masks[c], " "))
        out.append("─" if joins[c] else " ")
    return "".join(out)
