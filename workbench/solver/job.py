"""The state of one solve, shared by the ops it runs: no module keeps any of it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.llb.ops import LocalSource, Vertex
from workbench.progress.events import EventBus
from workbench.solver.checksum import load_hash_cache, save_hash_cache
from workbench.solver.session import Session
from workbench.solver.types import LocalContext, Result, SolveError

if TYPE_CHECKING:
    from workbench.cdi.context import BuildDevices
    from workbench.solver.hooks import StepHooks


class Contexts:
    """The local directories given to a build, by name. Their file-hash cache (`hash_file`) is loaded when
    one is first used and saved by `close`."""

    def __init__(self, dirs: dict[str, LocalContext], hash_file: Path) -> None:
        self.dirs = dirs
        self.hash_file = hash_file
        self._loaded = False

    def of(self, v: Vertex) -> LocalContext:
        """The directory `v` (a LocalSource) names; SolveError when none was given."""
        assert isinstance(v.op, LocalSource)
        if not self._loaded:
            self._loaded = True
            load_hash_cache(self.hash_file)
        ctx = self.dirs.get(v.op.name)
        if ctx is None:
            raise SolveError(f"no local directory given for {v.op.name!r}", v)
        return ctx

    def close(self) -> None:
        if self._loaded:
            save_hash_cache(self.hash_file)


@dataclass
class SolveJob:
    """What the ops of one solve share: its event bus, contexts, session, cancel flag, devices and hooks,
    the results so far, and what remote sources resolved at key time (so a fetch gets what was keyed)."""

    bus: EventBus
    contexts: Contexts
    session: Session
    cancel: threading.Event
    devices: BuildDevices | None = None
    hooks: StepHooks | None = None
    results: dict[str, Result] = field(default_factory=dict)
    resolved: dict[str, object] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # the scheduler's: each vertex's place in the graph
    missed: dict[str, str] = field(default_factory=dict)  # the scheduler's: the keys that run, to their steps
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def context(self, v: Vertex) -> LocalContext:
        return self.contexts.of(v)

    def remember(self, v: Vertex, value: object) -> None:
        """Keep what `v`'s key was computed from, for its run."""
        with self._lock:
            self.resolved[v.digest] = value

    def recall(self, v: Vertex) -> object | None:
        with self._lock:
            return self.resolved.get(v.digest)
