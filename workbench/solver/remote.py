"""Remote sources for ADD: HTTP(S) downloads and git checkouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.llb.ops import Vertex
    from workbench.solver.solver import Solver


def source_key(solver: Solver, v: Vertex) -> str:
    """The part of `v`'s cache key that stands for the remote content."""
    from workbench.solver.solver import SolveError

    raise SolveError("ADD from a URL or git is not supported yet", v)


def fetch(solver: Solver, v: Vertex) -> list[str]:
    """Fetch the remote content into a new snapshot; returns the chain."""
    from workbench.solver.solver import SolveError

    raise SolveError("ADD from a URL or git is not supported yet", v)
