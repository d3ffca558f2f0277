"""Our build graph (a target `Vertex`) as BuildKit's `pb.Definition`, what `buildctl build` sends without a frontend.

Each op is serialised deterministically, so the same graph gives the same bytes and op digests. `def` lists the
ops inputs first, in the depth-first order of client/llb's marshaller, then the terminal op (one input: the
target). `metadata` carries each step's name (`llb.customname`), `ignore_cache` and the caps it uses; `Source`
maps op digests to Dockerfile lines, so the daemon's errors point at them. Caps the daemon lacks get BuildKit's own
fallback (a merge becomes copies) or a one-line refusal naming the step's line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from workbench.llb.ops import ExecOp, FileOp, MergeOp, ScratchSource, Vertex, ignores_cache
from workbench.progress.events import SourceLocation
from workbench.remote.marshal_caps import CAP_FEATURES, V020_CAPS
from workbench.remote.marshal_ops import (
    EMPTY,
    MarshalError,
    OpOptions,
    exec_op,
    file_op,
    merge_as_copies,
    merge_op,
    op_bytes,
    source_op,
)
from workbench.remote.proto import ops_pb2 as pb

__all__ = ["Marshalled", "MarshalError", "marshal"]


@dataclass
class Marshalled:
    """The Definition, its bytes, and how its op digests relate to our graph."""

    definition: pb.Definition
    data: bytes
    op_digests: dict[str, str] = field(default_factory=dict)
    """our vertex digest → its op's digest in the Definition (absent for scratch)."""
    names: dict[str, str] = field(default_factory=dict)
    """op digest → the step's name."""
    locations: dict[str, SourceLocation] = field(default_factory=dict)
    """op digest → where the step is in the Dockerfile."""


def _where(v: Vertex) -> str:
    step = v.name or type(v.op).__name__
    if v.source is None:
        return step
    loc = v.source
    return f"{loc.filename}:{loc.start_line}" + (f"-{loc.end_line}" if loc.end_line != loc.start_line else "") + \
        f": {step}"


class _Marshaller:
    def __init__(self, caps: frozenset[str], opts: OpOptions, dockerfile: bytes, no_cache: bool) -> None:
        self.caps = caps
        self.no_cache = no_cache
        self.opts = opts
        self.dockerfile = dockerfile
        self.refs: dict[str, pb.Input | None] = {}
        self.ops: dict[str, tuple[bytes, list[str]]] = {}
        self.metadata: dict[str, pb.OpMetadata] = {}
        self.out = Marshalled(pb.Definition(), b"")
        self.source = pb.Source()
        self.files: dict[str, int] = {}

    def ref(self, v: Vertex) -> pb.Input | None:
        """The output of `v` in the Definition (None: scratch), marshalling it first when it is new."""
        if v.digest not in self.refs:
            for below in v.walk():
                if below.digest not in self.refs:
                    self.refs[below.digest] = self._marshal(below)
        return self.refs[v.digest]

    def _marshal(self, v: Vertex) -> pb.Input | None:
        op, ours = v.op, v.digest
        if isinstance(op, ScratchSource):
            return None
        if isinstance(op, MergeOp):  # llb.Merge: scratch inputs dropped, a single one passed through
            kept = tuple(i for i in v.inputs if self.ref(i) is not None)
            if len(kept) < 2:
                return self.ref(kept[0]) if kept else None
            v = replace(v, inputs=kept)
        inputs: list[pb.Input] = []

        def add(i: Vertex) -> int:
            r = self.ref(i)
            if r is None:
                return EMPTY
            for n, existing in enumerate(inputs):
                if existing.digest == r.digest and existing.index == r.index:
                    return n
            inputs.append(pb.Input(digest=r.digest, index=r.index))
            return len(inputs) - 1

        try:
            if isinstance(op, ExecOp):
                pop, caps = exec_op(v, add, self.opts, self.caps)
            elif isinstance(op, FileOp):
                pop, caps = file_op(v, add)
            elif isinstance(op, MergeOp):
                pop, caps = merge_op(v, add, self.opts) if "mergeop" in self.caps else merge_as_copies(v, add)
            else:
                pop, caps = source_op(v, self.opts)
        except MarshalError as e:
            raise MarshalError(f"{_where(v)}: {e}", v.source) from None
        missing = sorted(caps - self.caps)
        if missing:
            what = CAP_FEATURES.get(missing[0], missing[0])
            raise MarshalError(f"{_where(v)}: {what} needs BuildKit's LLB cap {missing[0]!r}, which this daemon "
                               "lacks (Docker 20.10 embeds BuildKit v0.8)", v.source)
        pop.inputs.extend(inputs)
        data = op_bytes(pop)
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        self.ops.setdefault(dgst, (data, [i.digest for i in inputs]))
        self._describe(dgst, v, caps)
        self.out.op_digests[ours] = dgst
        return pb.Input(digest=dgst, index=0)

    def _describe(self, dgst: str, v: Vertex, caps: set[str]) -> None:
        md = self.metadata.setdefault(dgst, pb.OpMetadata())
        if v.name:  # the last one written wins, as llb's mergeMetadata
            md.description["llb.customname"] = v.name
            self.out.names[dgst] = v.name
        if ignores_cache(v, self.no_cache):
            md.ignore_cache = True
        for cap in caps:
            md.caps[cap] = True
        if v.source is None:
            return
        loc = v.source
        self.out.locations.setdefault(dgst, loc)
        if loc.filename not in self.files:
            self.files[loc.filename] = len(self.source.infos)
            self.source.infos.append(pb.SourceInfo(filename=loc.filename, data=self.dockerfile, language="Dockerfile"))
        rng = pb.Range(start=pb.Position(line=loc.start_line), end=pb.Position(line=loc.end_line))
        location = pb.Location(sourceIndex=self.files[loc.filename], ranges=[rng])
        entries = self.source.locations[dgst].locations
        if location not in entries:
            entries.append(location)

    def definition(self, target: Vertex) -> Marshalled:
        top = self.ref(target)
        if top is None:
            raise MarshalError(f"{_where(target)}: the target is empty (scratch): BuildKit has nothing to build")
        order: list[str] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(top.digest, False)]
        while stack:  # llb's depth-first marshal, inputs in each op's order, without Python's recursion limit
            dgst, expanded = stack.pop()
            if expanded:
                order.append(dgst)
                continue
            if dgst in seen:
                continue
            seen.add(dgst)
            stack.append((dgst, True))
            stack.extend((i, False) for i in reversed(self.ops[dgst][1]))
        d = self.out.definition
        terminal = op_bytes(pb.Op(inputs=[top]))
        tdgst = "sha256:" + hashlib.sha256(terminal).hexdigest()
        defs = getattr(d, "def")
        defs.extend(self.ops[dgst][0] for dgst in order)
        defs.append(terminal)
        for dgst in order:
            d.metadata[dgst].CopyFrom(self.metadata[dgst])
        tmd = d.metadata[tdgst]
        tmd.caps["constraints"] = True
        tmd.caps["platform"] = True
        if any(m.ignore_cache for m in self.metadata.values()):
            tmd.caps["meta.ignorecache"] = True
        if any(m.description for m in self.metadata.values()):
            tmd.caps["meta.description"] = True
        for dgst in order:
            if dgst in self.source.locations:
                d.Source.locations[dgst].CopyFrom(self.source.locations[dgst])
        d.Source.infos.extend(self.source.infos)
        self.out.data = d.SerializeToString(deterministic=True)
        return self.out


def marshal(target: Vertex, dockerfile: str | bytes = b"", *, caps: frozenset[str] | set[str] | None = None,
            platform: str = "linux/amd64", network_host: bool = False, session_id: str = "",
            shared_key_hint: str = "", unique_id: str = "", no_cache: bool = False) -> Marshalled:
    """`target`'s graph as a Definition for a daemon supporting `caps` (default: BuildKit v0.20's).

    `dockerfile` is the text shown by the daemon's errors; `network_host` runs every RUN without its own
    `--network` in the host's network; `session_id` fills `local.session` (else the daemon takes the session
    of the solve's request); `unique_id` fills `local.unique` where no session is named; `no_cache` (the
    build's --no-cache) sets ignore_cache on the ops it applies to (`ignores_cache`: RUN, COPY, ADD), as the
    Vertex's own `ignore_cache` does on its op."""
    text = dockerfile.encode() if isinstance(dockerfile, str) else dockerfile
    opts = OpOptions(platform=platform, network_host=network_host, session_id=session_id,
                     shared_key_hint=shared_key_hint, unique_id=unique_id)
    caps_set = frozenset(V020_CAPS if caps is None else caps)
    return _Marshaller(caps_set, opts, text, no_cache).definition(target)
