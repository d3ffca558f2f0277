"""The solver: cache keys for every vertex, then run only what missed, independent vertices in parallel.

Keys are computed top-down before anything runs: key = H(op digest, input keys, content checksums of
the context files a copy reads). A vertex whose key is in the store is CACHED and its inputs are never
built; a miss runs once all its inputs have results.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.interruptible import wait_futures
from workbench.llb.ops import (
    Copy,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    LocalSource,
    MergeOp,
    ScratchSource,
    Vertex,
    ignores_cache,
    rerun_roots,
)
from workbench.progress.events import (
    EventBus,
    VertexCached,
    VertexCompleted,
    VertexFailed,
    VertexPlanned,
    VertexStarted,
    VertexStatus,
)
from workbench.solver import dedupe, why
from workbench.solver.cachesource import CacheSource, LocalCache
from workbench.solver.checksum import copy_checksum
from workbench.solver.fileops import FileActionError
from workbench.solver.hooks import Aborted, RunClock, StepHooks
from workbench.solver.job import Contexts, SolveJob
from workbench.solver.session import Session
from workbench.solver.step import Step
from workbench.solver.types import LocalContext, Result, SolveError

if TYPE_CHECKING:
    from workbench.cdi.context import BuildDevices
    from workbench.worker import Worker

__all__ = ["LocalContext", "Result", "SolveError", "Solver", "default_parallelism"]


def _failure_text(e: Exception) -> str:
    """What a step's unexpected failure says: the OS's words and the path for a system error, the message of
    a refused layer; the exception's type only where nothing better is known (a bug)."""
    from workbench.fsutil.paths import UnsafePathError

    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    if isinstance(e, UnsafePathError):
        return str(e)
    return f"{type(e).__name__}: {e}"


class _AbortedAtPause(SolveError):
    """The user aborted the build at a pause before a step: the build fails with this, the step is canceled
    (it never ran)."""


@dataclass
class _KeyInfo:
    key: str
    components: dict[str, object] = field(default_factory=dict)


def default_parallelism() -> int:
    """How many vertices run at once: $WORKBENCH_MAX_PARALLELISM, else 32 (steps mostly wait on processes)."""
    import os

    try:
        return max(1, int(os.environ.get("WORKBENCH_MAX_PARALLELISM", "32")))
    except ValueError:
        return 32


def _key_digest(v: Vertex) -> str:
    """The op's part of its cache key: its digest, except that a checksummed download is keyed by the
    checksum and not the URL (as BuildKit), so a mirror of the same file hits the same cache."""
    if isinstance(v.op, HttpSource) and v.op.checksum:
        from dataclasses import replace

        return Vertex(replace(v.op, url=""), v.inputs).digest
    return v.digest


class Solver:
    """Solves LLB graphs on one worker, given everything it works with when it is made."""

    def __init__(
        self,
        worker: Worker,
        bus: EventBus,
        contexts: dict[str, LocalContext] | None = None,
        *,
        no_cache: bool = False,
        parallelism: int | None = None,
        session: Session | None = None,
        cancel: threading.Event | None = None,
        hooks: StepHooks | None = None,
        devices: BuildDevices | None = None,
        cache_sources: Sequence[CacheSource] = (),
        lineage_scope: str = "",
    ) -> None:
        """`hooks` observe (and may pause) each step (workbench.debug); `devices` are the `RUN --device` grants
        (workbench.cdi): key parts and injection; `cache_sources` are consulted after the local store on a
        miss (`--cache-from`); `lineage_scope` (the Dockerfile's path) makes miss reasons compare the steps
        of the same file."""
        self.worker = worker
        self.bus = bus
        self.contexts = Contexts(contexts or {}, worker.root / "context-hashes")
        self.no_cache = no_cache
        self.parallelism = parallelism or default_parallelism()
        self.session = session or Session()
        self.cancel = cancel if cancel is not None else threading.Event()
        self.hooks = hooks
        self.devices = devices
        self.cache_sources: list[CacheSource] = [LocalCache(worker), *cache_sources]
        self.lineage_scope = lineage_scope
        self.steps: list[dict[str, object]] = []  # what happened to each step, in order (for `inspect why`)
        self._keys: dict[str, _KeyInfo] = {}
        self._forced: dict[str, str] = {}  # why a step whose result is cached runs anyway, by vertex digest

    def close(self) -> None:
        """Save what this solver learnt about the contexts' files (the worker is closed by its owner)."""
        self.contexts.close()

    # -- keys ---------------------------------------------------------------------------------------

    def _compute_key(self, job: SolveJob, v: Vertex) -> _KeyInfo:
        parts: list[str] = [_key_digest(v)]
        components: dict[str, object] = {"op": v.digest}
        if isinstance(v.op, LocalSource):
            return _KeyInfo("local:" + v.op.name, components)
        input_keys = [self._keys[i.digest].key for i in v.inputs]
        components["text"] = why.instruction_text(v)
        components["detail"] = why.op_detail(v)
        components["inputs"] = [{"name": i.name, "key": k} for i, k in zip(v.inputs, input_keys, strict=True)]
        parts += input_keys
        if isinstance(v.op, HttpSource | GitSource):
            remote_key = self._remote_key(job, v)
            parts.append(remote_key)
            components["remote"] = remote_key
        if isinstance(v.op, ExecOp) and v.op.mounts:
            from workbench.solver import mounts

            mount_parts = mounts.mount_key_parts(job, v)
            parts += mount_parts
            if mount_parts:
                components["mounts_key"] = hashlib.sha256("\n".join(mount_parts).encode()).hexdigest()
        if isinstance(v.op, ExecOp) and v.op.devices and job.devices is not None:
            device_part = job.devices.key_part(v)  # the devices granted, as BuildKit's rewritten op
            if device_part:
                parts.append(device_part)
                components["devices"] = job.devices.granted(v)
        if isinstance(v.op, FileOp):
            files: dict[str, str] = {}
            for n, action in enumerate(v.op.actions):
                if not isinstance(action, Copy):
                    continue
                src_vertex = v.inputs[action.src_input]
                if not isinstance(src_vertex.op, LocalSource):
                    continue
                ctx = job.context(src_vertex)
                try:
                    checksum, read = copy_checksum(ctx.path, action, ctx.excluded)
                except FileActionError as e:
                    raise SolveError(f"failed to compute cache key: {e}", v) from None
                parts.append(f"{n}:{checksum}")
                files.update(read)
            if files:
                components["files"] = files
        key = "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return _KeyInfo(key, components)

    def _remote_key(self, job: SolveJob, v: Vertex) -> str:
        """The part of a remote source's key that stands for its content (asked of the remote)."""
        from workbench.solver import remote

        try:
            return remote.source_key(self.worker, job, v)
        except SolveError as e:  # BuildKit's words for a remote source that cannot be reached for its key
            raise SolveError(f"failed to load cache key: {e.message}", v) from None

    def key_of(self, v: Vertex) -> str:
        """The cache key computed for `v` in the last solve ("" if it was not part of it)."""
        info = self._keys.get(v.digest)
        return info.key if info is not None else ""

    def _last_record(self, v: Vertex) -> tuple[str, dict[str, object]] | None:
        by_text, by_position = why.lineages(self.lineage_scope, v)
        store = self.worker.store
        return store.last_lineage(by_text) or store.last_lineage(by_position)

    def _miss_reason(self, v: Vertex, info: _KeyInfo, missed: dict[str, str], forced: str = "") -> str:
        ignored = why.ignored_by(v, self.no_cache)
        last = None if ignored else self._last_record(v)
        old_key, old = last if last is not None else ("", None)
        return why.explain(old, info.components, old_key, info.key, missed, ignored, forced)

    # -- solving ------------------------------------------------------------------------------------

    def solve(self, target: Vertex) -> Result:
        vertices = target.walk()
        bus = self.bus
        quiet = {v.digest for v in vertices if v.hidden or isinstance(v.op, ScratchSource)}
        if quiet:  # BuildKit has no vertex for scratch, and shows a `COPY --link` by its copy alone
            from workbench.progress.quiet import QuietBus

            bus = QuietBus(bus, quiet)
        job = SolveJob(bus, self.contexts, self.session, self.cancel, self.devices, self.hooks)
        job.order = {v.digest: n for n, v in enumerate(vertices)}
        for v in vertices:  # the whole graph is announced first, as BuildKit does: a failure may stop some early
            if not isinstance(v.op, LocalSource):
                bus.emit(VertexPlanned(v.digest, v.name, inputs=tuple(i.digest for i in v.inputs), source=v.source))
        for v in vertices:
            try:
                self._keys[v.digest] = self._compute_key(job, v)
            except SolveError as e:
                now = time.time()
                vv = e.vertex or v
                bus.emit(VertexStarted(vv.digest, vv.name, inputs=tuple(i.digest for i in vv.inputs),
                                       source=vv.source, ts=now))
                bus.emit(VertexFailed(vv.digest, vv.name, error=e.message, ts=time.time()))
                raise

        results = job.results
        to_run = self._plan(job, target)
        job.missed = {self._keys[v.digest].key: v.name for v in to_run}
        # Everything not run is reported as cached, inputs first (as BuildKit shows them).
        run_set = {v.digest for v in to_run}
        for v in vertices:
            if v.digest in run_set or isinstance(v.op, LocalSource):
                continue
            info = self._keys[v.digest]
            if v.digest in results or any(source.has(info.key) for source in self.cache_sources):
                self.steps.append({"name": v.name, "digest": v.digest, "cached": True, "order": job.order[v.digest]})
                chain = results[v.digest].chain if v.digest in results else []
                bus.emit(VertexCached(v.digest, v.name, inputs=tuple(i.digest for i in v.inputs),
                                      source=v.source, cache_key=info.key, snapshot=chain[-1] if chain else "",
                                      key_parts=why.shown_parts(info.components)))
        self.worker.store.touch([r.key for r in results.values() if r.key])
        self._run(job, to_run)
        return results[target.digest]

    def _plan(self, job: SolveJob, target: Vertex) -> list[Vertex]:
        """The vertices that must run, inputs first (keys computed); the results of those that need not are
        put in `job.results`. A vertex found in a cache source is not run, and neither are its inputs."""
        results = job.results
        to_run: list[Vertex] = []
        seen: set[str] = set()
        breaks_below: dict[str, bool] = {}
        hooks = self.hooks

        def leads_to_break(v: Vertex) -> bool:
            """A step the hooks want run is at `v` or under it: run `v` so the build gets there."""
            if v.digest not in breaks_below:
                assert hooks is not None
                breaks_below[v.digest] = hooks.wants_fresh_run(v) or any(leads_to_break(i) for i in v.inputs)
            return breaks_below[v.digest]

        reruns = rerun_roots(target, self.no_cache)

        def cached(v: Vertex) -> bool:
            """Whether `v` needs no run (its result, if any, is put in `results`)."""
            info = self._keys[v.digest]
            if isinstance(v.op, LocalSource):
                results[v.digest] = Result([], info.key)
                return True
            fresh = hooks is not None and leads_to_break(v)
            below = reruns[v.digest]
            if below is v:
                return False
            if below is not None:
                if any(source.has(info.key) for source in self.cache_sources):
                    self._forced[v.digest] = why.rerun_below(below, self.no_cache)
                return False
            if fresh:  # its result is kept: it runs again only so that the build stops at the breakpoint
                if any(source.has(info.key) for source in self.cache_sources):
                    self._forced[v.digest] = why.BREAKPOINT_RERUN
                return False
            for source in self.cache_sources:
                chain = source.materialize(v, info.key)
                if chain is not None:
                    results[v.digest] = Result(chain, info.key)
                    return True
            return False

        # depth first, inputs before dependents, without recursion (a chain can be thousands of steps)
        stack: list[tuple[Vertex, bool]] = [(target, False)]
        while stack:
            v, inputs_planned = stack.pop()
            if inputs_planned:
                to_run.append(v)
            elif v.digest not in seen:
                seen.add(v.digest)
                if not cached(v):
                    stack.append((v, True))
                    stack.extend((i, False) for i in reversed(v.inputs))
        return to_run

    def _run(self, job: SolveJob, to_run: list[Vertex]) -> None:
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="solve") as pool:
            try:
                self._schedule(job, pool, list(to_run))
            except BaseException:
                # Ctrl-C (KeyboardInterrupt) or any other way out: kill the running steps now, so that
                # leaving the pool does not wait for them to run to their end
                self.cancel.set()
                raise

    def _schedule(self, job: SolveJob, pool: ThreadPoolExecutor, pending: list[Vertex]) -> None:
        """Run each pending vertex once its inputs are done; the first failure cancels the rest."""
        results = job.results
        running: dict[Future[Result], Vertex] = {}
        error: SolveError | None = None
        while pending or running:
            if error is None:
                for v in list(pending):
                    if all(i.digest in results for i in v.inputs):
                        pending.remove(v)
                        inputs = [results[i.digest] for i in v.inputs]
                        running[pool.submit(self._execute, job, v, inputs)] = v
            if not running:
                break
            done, _ = wait_futures(running, return_when=FIRST_COMPLETED)  # Ctrl-C ends it at once
            for fut in done:
                v = running.pop(fut)
                try:
                    results[v.digest] = fut.result()
                except SolveError as e:
                    if error is None:
                        error = e
                        self.cancel.set()
                except Exception as e:  # an unexpected failure still fails just this build, clearly
                    if error is None:
                        error = SolveError(_failure_text(e), v)
                        self.cancel.set()
        if error is not None:
            raise error

    def _execute(self, job: SolveJob, v: Vertex, inputs: list[Result]) -> Result:
        info = self._keys[v.digest]
        bus, store = job.bus, self.worker.store
        clock = RunClock(self.hooks, v)  # a debugger's pauses are not run time
        start = clock.start
        reason = self._miss_reason(v, info, job.missed, self._forced.get(v.digest, ""))
        self.steps.append({"name": v.name, "digest": v.digest, "cached": False, "reason": reason,
                           "order": job.order.get(v.digest, 0)})
        bus.emit(VertexStarted(v.digest, v.name, inputs=tuple(i.digest for i in v.inputs), source=v.source,
                               miss_reason=reason, key_parts=why.shown_parts(info.components), ts=start))
        ignore = ignores_cache(v, self.no_cache)
        # a --no-cache build locks its own name: it never joins a cached build's execution (as BuildKit)
        lock_name = info.key + ("-ignorecache" if ignore else "")

        def waiting() -> None:
            bus.emit(VertexStatus(v.digest, v.name, status_id="waiting for a concurrent build of this step"))

        step = None
        try:
            if self.cancel.is_set():
                raise SolveError("canceled", v)
            if self.hooks is not None:
                step = Step(self.worker, job, v, inputs)
                self._before_step(step)
            with dedupe.key_lock(self.worker.root, lock_name, self.cancel, waiting) as waited:
                chain = None
                if waited and not ignore:
                    found = store.lookup(info.key)
                    if found is not None and self.worker.has_chain(found):
                        chain = found
                        bus.emit(VertexStatus(v.digest, v.name, done=True,
                                              status_id="reused the result of a concurrent build"))
                if chain is None:
                    built = self._do(job, v, inputs)
                    chain = store.record(info.key, built, v.name)
                    if chain != built:  # the stored result stays: ours is a copy the GC may take later
                        self.worker.snapshots.mark_duplicates(sorted(set(built) - set(chain)))
        except dedupe.Canceled:
            bus.emit(VertexFailed(v.digest, v.name, error="canceled", duration=clock.seconds(), paused=clock.held()))
            raise SolveError("canceled", v) from None
        except _AbortedAtPause:  # the step never ran: canceled, not failed
            bus.emit(VertexFailed(v.digest, v.name, error="canceled", duration=clock.seconds(), paused=clock.held()))
            raise
        except SolveError as e:
            e.vertex = e.vertex or v
            bus.emit(VertexFailed(v.digest, v.name, error=e.message, duration=clock.seconds(), paused=clock.held()))
            raise
        except Exception as e:
            msg = f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else str(e)
            bus.emit(VertexFailed(v.digest, v.name, error=msg, duration=clock.seconds(), paused=clock.held()))
            raise SolveError(msg, v) from e
        for lineage in dict.fromkeys(why.lineages(self.lineage_scope, v)):
            store.record_lineage(lineage, info.key, info.components)
        bus.emit(VertexCompleted(v.digest, v.name, duration=clock.seconds(), cache_key=info.key,
                                 snapshot=chain[-1] if chain else "", paused=clock.held()))
        result = Result(chain, info.key)
        if self.hooks is not None and step is not None:
            self.hooks.after_step(step, result)
        return result

    def _before_step(self, step: Step) -> None:
        assert self.hooks is not None
        try:
            self.hooks.before_step(step)
        except Aborted:
            raise _AbortedAtPause("build aborted in the debugger", step.vertex) from None
        finally:
            step.release()

    def _do(self, job: SolveJob, v: Vertex, inputs: list[Result]) -> list[str]:
        from workbench.solver import runners

        op = v.op
        if isinstance(op, ScratchSource):
            return []
        if isinstance(op, ImageSource):
            return runners.pull_image(self.worker, job.bus, v, op)
        if isinstance(op, ExecOp):
            return runners.run_exec(self.worker, job, v, op, inputs)
        if isinstance(op, FileOp):
            return runners.run_file(self.worker, job, v, op, inputs)
        if isinstance(op, MergeOp):
            # a layer shared by several inputs (their common base) is stacked once, where it first appears
            return list(dict.fromkeys(s for r in inputs for s in r.chain))
        if isinstance(op, HttpSource | GitSource):
            from workbench.solver import remote

            return remote.fetch(self.worker, job, v)
        raise SolveError(f"cannot solve op {type(op).__name__}", v)
