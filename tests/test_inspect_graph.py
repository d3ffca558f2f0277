"""`workbench inspect graph`: the Dockerfile's graph as text lanes, DOT, SVG and Mermaid, with the last recorded
build's durations and critical path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb

DOCKERFILE = """\
FROM scratch AS base
COPY a.txt /a
FROM base AS build
RUN make
FROM base
RUN echo final
COPY --from=build /out /out
"""
"""Two stages FROM one base (a fork), joined by COPY --from (a merge); nothing here needs a registry."""
COPY_A, MAKE, FINAL = "[base 1/1] COPY a.txt /a", "[build 1/1] RUN make", "[stage-2 1/2] RUN echo final"
COPY_FROM = "[stage-2 2/2] COPY --from=build /out /out"
EDGES = {(COPY_A, MAKE), (COPY_A, FINAL), (FINAL, COPY_FROM), (MAKE, COPY_FROM)}
"""The edges, by the steps' names as a build names them."""


def graph(ctx: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + ["inspect", "graph", str(ctx), "--root", str(ctx.parent / "root"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def _labels(text: str, pattern: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(pattern, text)}


def test_dot_names_steps_as_the_build_and_has_every_edge(ctx: Path) -> None:
    proc = graph(ctx, "--format", "dot")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("digraph build {") and text.rstrip().endswith("}") and text.count("{") == text.count("}")
    assert re.findall(r'label="stage ([^"]+)"', text) == ["base", "build", "stage-2"]
    names = {k: v.split("\\n")[0] for k, v in _labels(text, r'(?m)^\s*(n\d+) \[label="([^"]*)"').items()}
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(n\d+) -> (n\d+);$", text, re.M)}
    assert edges == EDGES
    assert "◆" not in text  # no recorded build: no durations, no critical path


def test_mermaid_is_a_flowchart_with_every_edge(ctx: Path) -> None:
    proc = graph(ctx, "--format", "mermaid")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    subgraphs = [line.strip() for line in lines if line.strip().startswith("subgraph ")]
    assert len(subgraphs) == 3 == sum(line.strip() == "end" for line in lines)
    nodes = dict(re.findall(r'^\s+(n\d+)\["([^"]*)"\]$', proc.stdout, re.M))
    edges = re.findall(r"^\s+(n\d+) (-->|==>) (n\d+)$", proc.stdout, re.M)
    assert len(edges) == 4 and all(a in nodes and b in nodes for a, _, b in edges)
    assert {(nodes[a], nodes[b]) for a, _, b in edges} == EDGES


def test_text_draws_the_fork_and_the_merge(ctx: Path) -> None:
    proc = graph(ctx)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "▾ stage base",
        "* [1/1] COPY a.txt /a",
        "├─▾ stage build",
        "│ * [1/1] RUN make",
        "▾ │ stage stage-2",
        "* │ [1/2] RUN echo final",
        "*─╯ [2/2] COPY --from=build /out /out",
    ]


def test_svg_through_graphviz(ctx: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    proc = graph(ctx, "--format", "svg")
    assert proc.returncode == 0, proc.stderr
    assert "<svg" in proc.stdout and proc.stdout.rstrip().endswith("</svg>") and "RUN make" in proc.stdout


def test_svg_without_dot_says_what_to_do(ctx: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # a PATH without dot
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare), "WORKBENCH_SERVER": "0"}
    proc = graph(ctx, "--format", "svg", env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "ERROR: Graphviz's `dot` is not installed: install graphviz (apt-get install graphviz) or use --format dot"]


def test_durations_and_critical_path_from_the_last_recorded_build(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a real build)")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("a.txt", "b.txt"):
        (ctx / name).write_text(name)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a\nCOPY b.txt /b\n")
    assert "◆" not in graph(ctx).stdout
    wb(str(ctx), root=tmp_path / "root")
    proc = graph(ctx)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"◆ \[1/2\] COPY a\.txt /a +\d+\.\d\ds ◆", lines[1]), lines
    assert re.fullmatch(r"◆ \[2/2\] COPY b\.txt /b +\d+\.\d\ds ◆", lines[2]), lines
    assert re.fullmatch(r"◆ critical path: 2 steps, \d+\.\d\ds", lines[-1]), lines
    wb(str(ctx), root=tmp_path / "root")  # now all cached: the newest build is the one shown
    assert [line.split()[-1] for line in graph(ctx).stdout.splitlines()[1:3]] == ["CACHED", "CACHED"]
