"""The graph's layout in lanes (pure): straight chains, forks and merges, folded stages, the critical path, and
the DOT / Mermaid / text it is written out as."""

from __future__ import annotations

import re
import time

from tests.graph_events import CHAIN, FORK_MERGE, big, digest
from workbench.progress.graph_export import Graph, to_dot, to_mermaid, to_text
from workbench.progress.graph_layout import GraphNode, critical_path, layout, stage_order
from workbench.tui.model import stage_of


def nodes(steps: list[tuple[str, tuple[int, ...], float | None, int]]) -> list[GraphNode]:
    return [GraphNode(digest(n), stage_of(name), tuple(digest(i) for i in ins), duration or 0.0)
            for n, (name, ins, duration, _) in enumerate(steps)]


def drawn(graph: list[GraphNode], folded: tuple[str, ...] = ()) -> list[str]:
    return [row.cells.rstrip() for row in layout(graph, folded).rows]


def test_a_chain_is_one_straight_lane() -> None:
    graph = layout(nodes(CHAIN))
    assert graph.lanes == 1
    assert [r.cells.rstrip() for r in graph.rows] == ["▾", "*", "*", "*", "*"]
    assert [r.lane for r in graph.rows] == [0] * 5


def test_a_fork_and_a_merge() -> None:
    assert drawn(nodes(FORK_MERGE)) == [
        "▾",        # stage base
        "*",        # FROM
        "*",        # COPY a.txt: read by build and stage-2
        "├─▾",      # stage build forks off base's lane
        "│ *",      # RUN make
        "▾ │",      # stage-2 goes on down base's lane
        "* │",      # RUN echo final
        "*─╯",      # COPY --from=build: build's lane merges
    ]


def test_a_stage_from_another_continues_its_lane() -> None:
    graph = nodes([("[a 1/2] FROM x", (), None, 1), ("[a 2/2] RUN a", (0,), 1.0, 2),
                   ("[b 1/1] RUN b", (1,), 1.0, 4)])
    assert drawn(graph) == ["▾", "*", "*", "▾", "*"]


def test_independent_stages_side_by_side_then_merged() -> None:
    graph = nodes([("[one 1/1] RUN one", (), 1.0, 1), ("[two 1/1] RUN two", (), 1.0, 3),
                   ("[three 1/1] RUN three", (), 1.0, 5), ("[4/4] COPY --from=one --from=two", (0, 1, 2), 1.0, 7)])
    assert drawn(graph) == ["▾", "*", "│ ▾", "│ *", "│ │ ▾", "│ │ *", "▾─┴─╯", "*"]


def test_a_folded_stage_stands_for_its_steps() -> None:
    assert drawn(nodes(FORK_MERGE), folded=("build",)) == ["▾", "*", "*", "├─▾", "▾ │", "* │", "*─╯"]


def test_stages_come_after_the_stages_they_read() -> None:
    graph = nodes([("[main 1/2] FROM x", (), None, 1), ("[builder 1/1] RUN make", (), 1.0, 3),
                   ("[main 2/2] COPY --from=builder", (0, 1), 1.0, 2)])
    graph = [graph[0], graph[2], graph[1]]  # the reader listed before what it reads
    assert stage_order(graph) == ["builder", "main"]
    rows = layout(graph).rows
    assert [r.vertex for r in rows if r.vertex] == [digest(1), digest(0), digest(2)]
    assert all(not r.undrawn for r in rows)


def test_the_critical_path_is_the_longest_chain_of_durations() -> None:
    chain, total = critical_path(nodes(FORK_MERGE))
    assert chain == [digest(0), digest(1), digest(2), digest(4)] and abs(total - 3.7) < 1e-9
    assert critical_path(nodes([("[1/1] FROM x", (), None, 1)])) == ([], 0.0)  # nothing ran: no path


def test_500_vertices_lay_out_in_one_lane_quickly() -> None:
    graph = nodes(big())
    t0 = time.perf_counter()
    drawn_graph = layout(graph)
    took = time.perf_counter() - t0
    assert len(drawn_graph.rows) == 520 and drawn_graph.lanes == 1
    assert len(critical_path(graph)[0]) == 500
    assert took < 0.25, took


# -- written out -----------------------------------------------------------------------------------------------


def _graph() -> Graph:
    graph = nodes(FORK_MERGE)
    names = {digest(n): name for n, (name, *_) in enumerate(FORK_MERGE)}
    timings = {digest(n): "CACHED" if d is None else f"{d:.2f}s" for n, (_, _, d, _) in enumerate(FORK_MERGE)}
    return Graph(graph, names, timings)


EDGES = {(1, 2), (2, 3), (2, 4), (4, 5), (3, 5)}  # n1..n5 in FORK_MERGE's order


def test_dot_has_a_cluster_per_stage_and_every_edge() -> None:
    text = to_dot(_graph())
    assert text.startswith("digraph build {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    assert len(re.findall(r"subgraph cluster_\d+ \{", text)) == 3
    edges = {(int(a), int(b)) for a, b in re.findall(r"^\s*n(\d+) -> n(\d+)", text, re.M)}
    assert edges == EDGES
    assert re.search(r'n3 \[label="◆ \[build 1/1\] RUN make\\n3.00s", penwidth=3\]', text)


def test_mermaid_has_a_subgraph_per_stage_and_every_edge() -> None:
    text = to_mermaid(_graph())
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert sum(line.strip().startswith("subgraph ") for line in lines) == 3 == sum(line.strip() == "end"
                                                                               for line in lines)
    edges = {(int(a), int(b)): arrow for a, arrow, b in re.findall(r"^\s*n(\d+) (-->|==>) n(\d+)$", text, re.M)}
    assert set(edges) == EDGES
    assert edges[(3, 5)] == "==>" and edges[(4, 5)] == "-->"  # the critical path's links are thick


def test_text_aligns_durations_and_marks_the_critical_path() -> None:
    lines = to_text(_graph()).splitlines()
    timed = [line for line in lines if line.rstrip().endswith(("s", "◆", "CACHED"))][:-1]
    assert len({len(line.rstrip(" ◆")) for line in timed}) == 1  # durations end in one column
    make = next(line for line in lines if "RUN make" in line)
    assert make.startswith("│ ◆ [1/1] RUN make") and make.endswith("3.00s ◆")
    assert lines[-1] == "◆ critical path: 4 steps, 3.70s"
