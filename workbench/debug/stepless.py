"""Dockerfile lines a breakpoint cannot stop at by themselves: a `FROM scratch` (or `FROM <an earlier stage>`)
makes no step of its own, as in BuildKit. As gdb moves a breakpoint on a line without code to the next line
with code, a breakpoint there stops before the stage's first step; with none, the user is told so."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.frontend.dockerfile.stepnames import NUMBERED


@dataclass(frozen=True)
class StepTarget:
    """A FROM with no step of its own, and where a breakpoint on it stops instead."""

    line: int
    """The FROM's first line (1-based)."""
    base: str
    """`scratch`, or the earlier stage it starts from."""
    first_step: int | None
    """The first line of the stage's first step (None: the stage has none)."""

    def note(self, line: int) -> str:
        """What the user is told when setting a breakpoint at `line` (a line of this FROM)."""
        head = f"line {line}: FROM {self.base} has no step to stop at"
        if self.first_step is None:
            return f"{head}; break on the next step"
        return f"{head}: the build stops before the stage's first step, line {self.first_step}"


def stepless_froms(text: str) -> dict[int, StepTarget]:
    """Every line of each FROM without a step of its own, to its target (an unparsable text has none)."""
    from workbench.frontend.dockerfile.parser import DockerfileParseError, parse

    try:
        nodes = parse(text).children
    except (DockerfileParseError, ValueError):
        return {}
    stages: set[str] = set()
    out: dict[int, StepTarget] = {}
    for n, node in enumerate(nodes):
        if node.keyword != "from" or not node.args:
            continue
        base = node.args[0]
        if len(node.args) >= 3 and node.args[1].lower() == "as":
            name = node.args[2].lower()
        else:
            name = ""
        if base.lower() == "scratch" or base.lower() in stages:
            first = None
            for later in nodes[n + 1:]:
                if later.keyword == "from":
                    break
                if later.keyword in NUMBERED:
                    first = later.start_line
                    break
            target = StepTarget(node.start_line, base, first)
            for line in range(node.start_line, node.end_line + 1):
                out[line] = target
        if name:
            stages.add(name)
    return out


def read_targets(path: Path) -> dict[int, StepTarget]:
    """`stepless_froms` of a Dockerfile on disk (none when it cannot be read)."""
    try:
        return stepless_froms(path.read_text())
    except (OSError, UnicodeDecodeError):
        return {}
