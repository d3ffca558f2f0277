"""What the solver takes in and hands out: a local context, a vertex's result, a build failure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.progress.text import printable

if TYPE_CHECKING:
    from workbench.llb.ops import Vertex
    from workbench.solver.fileops import Excluded


class SolveError(Exception):
    """A build failure, attributed to the vertex that failed (if any)."""

    def __init__(self, message: str, vertex: Vertex | None = None) -> None:
        message = printable(message, keep="\n\t")  # names from a Dockerfile may hold escape sequences
        super().__init__(message)
        self.message = message
        self.vertex = vertex


@dataclass
class LocalContext:
    """A local directory given to the build (the context), with its .dockerignore."""

    path: Path
    excluded: Excluded | None = None


@dataclass
class Result:
    """A vertex's output: a chain of snapshot ids, bottom first (empty for scratch)."""

    chain: list[str]
    key: str = ""
