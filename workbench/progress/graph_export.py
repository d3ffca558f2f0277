"""The build graph written out: plain text in lanes (as the TUI draws it), Graphviz DOT and Mermaid (each step
named as the build names it, clustered by stage), with durations and the critical path when known."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from workbench.progress.graph_layout import NODE, GraphNode, critical_path, layout, short_name, stage_order

CRITICAL = "◆"
"""Marks a step on the critical path, in every format."""


@dataclass(frozen=True)
class Graph:
    """Steps (inputs first) with their names and, from a recorded build, what each took (`timings`: shown text,
    e.g. `1.02s` or `CACHED`; durations in the nodes)."""

    nodes: Sequence[GraphNode]
    names: Mapping[str, str]
    timings: Mapping[str, str]

    def critical(self) -> tuple[list[str], float]:
        return critical_path(self.nodes) if self.timings else ([], 0.0)


def to_text(graph: Graph) -> str:
    """The lanes, one line per stage header and step, durations right-aligned in a column."""
    drawn = layout(graph.nodes)
    chain, total = graph.critical()
    marked = set(chain)
    lines: list[tuple[str, str]] = []
    for row in drawn.rows:
        cells = row.cells.rstrip()
        if not row.vertex:
            lines.append((cells + f" stage {row.stage}", ""))
            continue
        at = 2 * row.lane
        glyph = CRITICAL if row.vertex in marked else NODE
        timing = graph.timings.get(row.vertex, "")
        lines.append((f"{cells[:at]}{glyph}{cells[at + 1:]}".rstrip() + f" {short_name(graph.names[row.vertex])}",
                      f"{timing:>8} {CRITICAL if row.vertex in marked else ' '}".rstrip() if timing else ""))
    width = min(max((len(left) for left, right in lines if right), default=0), 100)
    out = [f"{left:<{width}}  {right}".rstrip() if right else left for left, right in lines]
    if chain:
        out.append(f"{CRITICAL} critical path: {len(chain)} steps, {total:.2f}s")
    return "\n".join(out) + "\n"


def _stages(graph: Graph) -> list[tuple[str, list[GraphNode]]]:
    """The stages in drawing order, each with its nodes."""
    by_stage: dict[str, list[GraphNode]] = {}
    for node in graph.nodes:
        by_stage.setdefault(node.stage, []).append(node)
    return [(stage, by_stage[stage]) for stage in stage_order(graph.nodes)]


def _label(graph: Graph, node: GraphNode, marked: set[str], escape: Callable[[str], str], newline: str) -> str:
    """A node's name and timing (escaped, on two lines), `CRITICAL` first when it is on the critical path."""
    label = escape(graph.names[node.id])
    if node.id in graph.timings:
        label += newline + escape(graph.timings[node.id])
    return f"{CRITICAL} {label}" if node.id in marked else label


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph: a cluster per stage, the critical path in bold with `CRITICAL` in its labels."""
    chain, total = graph.critical()
    marked = set(chain)
    ids = {node.id: f"n{n}" for n, node in enumerate(graph.nodes, 1)}
    out = ["digraph build {", "  rankdir=TB;", '  node [shape=box, style=rounded, fontname="monospace"];']
    if chain:
        out.append(f'  label="{CRITICAL} critical path {total:.2f}s"; labelloc=b;')
    for n, (stage, nodes) in enumerate(_stages(graph)):
        out.append(f'  subgraph cluster_{n} {{')
        out.append(f'    label="stage {_dot_text(stage)}"; style=dashed;')
        for node in nodes:
            extra = ", penwidth=3" if node.id in marked else ""
            label = _label(graph, node, marked, _dot_text, "\\n")  # DOT's own line break, escaped
            out.append(f'    {ids[node.id]} [label="{label}"{extra}];')
        out.append("  }")
    for node in graph.nodes:
        for i in node.inputs:
            if i in ids:
                bold = " [penwidth=3]" if i in marked and node.id in marked else ""
                out.append(f"  {ids[i]} -> {ids[node.id]}{bold};")
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    return "".join(f"#{ord(c)};" if c in '"<>#&' else c for c in text)


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart: a subgraph per stage; the critical path's links thick (`==>`) and its steps marked."""
    chain, total = graph.critical()
    marked = set(chain)
    ids = {node.id: f"n{n}" for n, node in enumerate(graph.nodes, 1)}
    out = ["flowchart TD"]
    for n, (stage, nodes) in enumerate(_stages(graph)):
        out.append(f'  subgraph s{n}["stage {_mermaid_text(stage)}"]')
        for node in nodes:
            label = _label(graph, node, marked, _mermaid_text, "<br/>")
            out.append(f'    {ids[node.id]}["{label}"]')
        out.append("  end")
    for node in graph.nodes:
        for i in node.inputs:
            if i in ids:
                arrow = "==>" if i in marked and node.id in marked else "-->"
                out.append(f"  {ids[i]} {arrow} {ids[node.id]}")
    if chain:
        out.append("  classDef critical stroke-width:3px")
        out.append("  class " + ",".join(ids[i] for i in chain) + " critical")
        out.append(f"  %% {CRITICAL} critical path {total:.2f}s")
    return "\n".join(out) + "\n"


FORMATS = {"text": to_text, "dot": to_dot, "mermaid": to_mermaid}
