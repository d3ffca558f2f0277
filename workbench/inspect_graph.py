"""`workbench inspect graph`: a Dockerfile's build graph (its LLB as `inspect llb` converts it, nothing run), as
text lanes, Graphviz DOT or SVG, or Mermaid; steps named as a build names them, clustered by stage, with the
durations and critical path of the most recent recorded build of the same Dockerfile."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench.progress.graph_export import FORMATS, Graph
from workbench.progress.graph_layout import GraphNode
from workbench.progress.trace import CACHED, FAILED, Step, Trace

NOT_SHOWN = ("LocalSource", "ScratchSource")
"""Ops a build shows no step for (the context, scratch): left out, with the edges from them."""
NO_DOT = "ERROR: Graphviz's `dot` is not installed: install graphviz (apt-get install graphviz) or use --format dot"


class GraphError(Exception):
    """The picture cannot be made; the message is one line for the user."""


def nodes_of(llb: Iterable[dict[str, Any]]) -> tuple[list[GraphNode], dict[str, str]]:
    """The steps of `inspect llb`'s records (inputs first) and their names; a `COPY --link`'s hidden merge is
    passed through (its readers read what it merges), as the build shows it by its copy alone."""
    from workbench.tui.model import stage_of

    through: dict[str, tuple[str, ...]] = {}
    nodes: list[GraphNode] = []
    names: dict[str, str] = {}
    for rec in llb:
        digest, name = rec["digest"], rec.get("name") or rec["op"]
        inputs: list[str] = []
        for i in rec.get("inputs", []):
            for j in through.get(i, (i,)):
                if j in names and j not in inputs:
                    inputs.append(j)
        if rec["op"] in NOT_SHOWN:
            through[digest] = ()
        elif rec["op"] == "MergeOp" and "] LINK " in name:
            through[digest] = tuple(inputs)
        else:
            nodes.append(GraphNode(digest, stage_of(name), tuple(inputs)))
            names[digest] = name
    return nodes, names


def last_build_steps(root: Path, dockerfile: Path) -> dict[str, Step]:
    """The steps of the most recent recorded build of `dockerfile` in `root`'s history, by digest and by name."""
    from workbench.history.recorder import history_dir
    from workbench.history.store import HistoryError, list_sessions, load_session

    wanted = str(dockerfile.absolute())
    for record in list_sessions(history_dir(root)):
        if record.meta.get("dockerfile") != wanted:
            continue
        try:
            session = load_session(record.path)
        except HistoryError:
            continue
        trace: Trace[Step] = Trace(Step)
        for ev in session.events:
            trace.apply(ev)
        steps = {s.id: s for s in trace.steps}
        steps.update({s.name: s for s in trace.steps if s.name not in steps})
        return steps
    return {}


def with_times(nodes: list[GraphNode], names: dict[str, str], steps: dict[str, Step]) -> Graph:
    """The graph with each step's recorded duration (matched by digest, else by name: an edited step)."""
    timed: list[GraphNode] = []
    timings: dict[str, str] = {}
    for node in nodes:
        step = steps.get(node.id) or steps.get(names[node.id])
        duration = 0.0
        if step is not None:
            duration = step.duration if step.duration is not None else step.elapsed
            timings[node.id] = "CACHED" if step.state == CACHED else "ERROR" if step.state == FAILED \
                else f"{duration:.2f}s"
        timed.append(GraphNode(node.id, node.stage, node.inputs, duration))
    return Graph(timed, names, timings)


def render(graph: Graph, fmt: str) -> str:
    """The graph in `fmt` (text, dot, mermaid, svg); GraphError when svg's `dot` is missing or fails."""
    if fmt != "svg":
        return FORMATS[fmt](graph)
    dot = shutil.which("dot")
    if dot is None:
        raise GraphError(NO_DOT)
    proc = subprocess.run([dot, "-Tsvg"], input=FORMATS["dot"](graph), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise GraphError(f"ERROR: dot -Tsvg failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def graph_text(llb_lines: Iterable[str], root: Path, dockerfile: Path, fmt: str) -> str:
    """`inspect graph`'s output from `inspect llb`'s lines."""
    nodes, names = nodes_of(json.loads(line) for line in llb_lines)
    return render(with_times(nodes, names, last_build_steps(root, dockerfile)), fmt)
