"""RUN --mount in the solver: cache keys of mounted inputs and the mounts a step's container gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.llb.ops import ExecOp

if TYPE_CHECKING:
    from workbench.llb.ops import Vertex
    from workbench.solver.solver import Solver


def mount_key_parts(solver: Solver, v: Vertex) -> list[str]:
    """Extra cache-key parts for `v`'s mounts (the content of context paths a bind mount reads)."""
    from workbench.solver.solver import SolveError

    assert isinstance(v.op, ExecOp)
    if v.op.mounts:
        raise SolveError("RUN --mount is not supported yet", v)
    return []
