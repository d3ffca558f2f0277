"""How much of the local context a build reads: the byte count of `[internal] load build context`'s
`transferring context` (BuildKit sends only the paths its copies and bind mounts use, .dockerignore applied)."""

from __future__ import annotations

import stat
from pathlib import Path

from workbench.llb.ops import Copy, ExecOp, FileOp, LocalSource, Vertex
from workbench.solver.fileops import Excluded, FileActionError, read_entries


def context_reads(target: Vertex) -> list[Copy]:
    """What the graph under `target` reads from a local source: its copies, and its bind mounts as copies of
    the mounted path."""
    reads: list[Copy] = []
    for v in target.walk():
        if isinstance(v.op, FileOp):
            reads += [a for a in v.op.actions
                      if isinstance(a, Copy) and isinstance(v.inputs[a.src_input].op, LocalSource)]
        elif isinstance(v.op, ExecOp):
            reads += [Copy(m.input, m.source or "/", "/") for m in v.op.mounts
                      if m.input >= 0 and isinstance(v.inputs[m.input].op, LocalSource)]
    return reads


def context_bytes(context: Path, reads: list[Copy], excluded: Excluded | None) -> int:
    """The size of the regular files `reads` take from `context`, each file once; a missing source counts
    nothing (the step itself reports it)."""
    sizes: dict[str, int] = {}
    for action in reads:
        try:
            for rel, host, st in read_entries(context, action, excluded):
                if rel in sizes:
                    continue
                if st is None:
                    st = Path(host).lstat()
                sizes[rel] = st.st_size if stat.S_ISREG(st.st_mode) else 0
        except (FileActionError, OSError):
            continue
    return sum(sizes.values())
