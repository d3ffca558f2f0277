"""Which steps the next build will run, and why, before anything runs.

The solver's own key computation and plan, on a throwaway solve: each vertex's cache key (the op, its inputs'
keys, the checksums of the context files a copy or bind mount reads), looked up in the cache store, and the
miss reason a build would give (workbench.solver.why). Nothing runs and nothing is recorded. A remote source
(ADD <url> without a checksum, a git context) is not asked for its content: its key is taken from its last
build, that is, the remote is assumed unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.llb.ops import LocalSource, ScratchSource, Vertex
from workbench.progress.events import EventBus, SourceLocation
from workbench.solver.cachesource import PeekCache
from workbench.solver.job import SolveJob
from workbench.solver.solver import Solver
from workbench.solver.types import LocalContext

if TYPE_CHECKING:
    from workbench.solver.hooks import StepHooks
    from workbench.solver.session import Session
    from workbench.worker import Worker

REMOTE_ASSUMED = "remote content assumed unchanged"
"""Said of a remote source whose key was taken from its last build."""


@dataclass(frozen=True)
class PredictedStep:
    """One step of the next build: whether it will run (`reason` says why) or come from the cache (None)."""

    digest: str
    name: str
    source: SourceLocation | None
    key: str
    reason: str | None
    note: str = ""
    """What the prediction assumed for this step (REMOTE_ASSUMED), if anything."""

    @property
    def runs(self) -> bool:
        return self.reason is not None


@dataclass
class Prediction:
    """The steps of the next build, inputs first (those a build shows: no context, scratch or hidden op)."""

    steps: list[PredictedStep] = field(default_factory=list)

    def misses(self) -> dict[str, str]:
        """Vertex digest -> why it will run, for the steps that will."""
        return {s.digest: s.reason for s in self.steps if s.reason is not None}

    def check(self, ran: Mapping[str, bool]) -> list[tuple[PredictedStep, str]]:
        """The steps the build did otherwise than predicted, each with what happened; `ran` maps the build's
        vertex digests to whether each ran (True) or came from the cache (False). Steps the build never
        reached (it failed or was canceled first) are not judged."""
        out = []
        for s in self.steps:
            if s.digest not in ran or ran[s.digest] == s.runs:
                continue
            said = f"re-run ({s.reason})" if s.runs else "come from the cache"
            did = "ran" if ran[s.digest] else "came from the cache"
            out.append((s, f"{s.name}: predicted to {said}, but it {did}" + (f" ({s.note})" if s.note else "")))
        return out


class _Predictor(Solver):
    """The solver's keys and plan, with remote sources keyed from their last build instead of the remote."""

    def plan_only(self, target: Vertex) -> Prediction:
        """The steps of a solve of `target`, with the reason of each that would run; nothing runs."""
        self.assumed: set[str] = set()
        job = SolveJob(self.bus, self.contexts, self.session, self.cancel, None, self.hooks)
        vertices = target.walk()
        for v in vertices:
            self._keys[v.digest] = self._compute_key(job, v)
        to_run = self._plan(job, target)
        missed = {self._keys[v.digest].key: v.name for v in to_run}
        reasons = {v.digest: self._miss_reason(v, self._keys[v.digest], missed, self._forced.get(v.digest, ""))
                   for v in to_run}
        return Prediction([PredictedStep(v.digest, v.name, v.source, self._keys[v.digest].key, reasons.get(v.digest),
                                         REMOTE_ASSUMED if v.digest in self.assumed else "")
                           for v in vertices if not (v.hidden or isinstance(v.op, LocalSource | ScratchSource))])

    def _remote_key(self, job: SolveJob, v: Vertex) -> str:
        self.assumed.add(v.digest)
        last = self._last_record(v)
        remote = last[1].get("remote") if last is not None else None
        return remote if isinstance(remote, str) else "unknown:" + v.digest  # never built: it misses


def predict(worker: Worker, target: Vertex, contexts: dict[str, LocalContext], *, no_cache: bool = False,
            session: Session | None = None, hooks: StepHooks | None = None,
            lineage_scope: str = "") -> Prediction:
    """What a solve of `target` on `worker` would run now, and why (SolveError where the solve would fail
    before running anything: a missing COPY source, an unknown secret). `hooks` are asked only which steps
    they want run afresh (a debugger's breakpoints); `lineage_scope` is the build's (the Dockerfile's path)."""
    solver = _Predictor(worker, EventBus(), contexts, no_cache=no_cache, session=session, hooks=hooks,
                        lineage_scope=lineage_scope)
    solver.cache_sources = [PeekCache(worker)]  # looked at, not used: no record's last use moves
    try:
        return solver.plan_only(target)
    finally:
        solver.close()
