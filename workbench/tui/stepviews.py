"""What the debugging keys open for a step, at a pause or after the build: its files (`f`), two steps' files
compared (`d`), a shell in them (`e`). A finished or cached step's result comes from the cache store by its
cache key; at a pause, the paused step's input, or after a failure the filesystem the failed step left; and
the same step's result in an earlier build of this app, for "what did my edit change". No Textual here."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.progress.trace import CACHED, DONE
from workbench.tui.model import BuildModel, VertexState

if TYPE_CHECKING:
    from workbench.debug.controller import Pause
    from workbench.engine import Engine

ViewOpener = Callable[[], AbstractContextManager[Path]]
"""Opens a step's filesystem (as workbench.tui.screens.files takes it): yields its root, releases it on exit."""

FAILED_FS = "the filesystem the failed step left"
EARLIER = "earlier:"
"""The id prefix of a step's result in an earlier build."""

_COUNTER = re.compile(r"^\[(?:(?P<stage>\S+) )? *\d+/\d+\] ")


def step_identity(name: str) -> str:
    """A step's name without the numbers of its `[stage n/N]` counter: the same instruction in a build that
    added or removed steps before it."""
    m = _COUNTER.match(name)
    return f"{m.group('stage') or ''}] {name[m.end():]}" if m else name


@dataclass(frozen=True)
class StepView:
    """A filesystem `d` can compare: an id for the diff screen, its label, and how to open it."""

    id: str
    label: str
    open: ViewOpener


class EarlierResults:
    """The results of each step (by `step_identity`) in the builds this app showed before: (build number,
    cache key), oldest first, one entry per different result."""

    def __init__(self) -> None:
        self._by_step: dict[str, list[tuple[int, str]]] = {}

    def remember(self, model: BuildModel, generation: int) -> None:
        """Keep the finished and cached steps' results of build `generation` (called before the next starts)."""
        for v in model.vertices.values():
            if not v.internal and v.state in (DONE, CACHED) and v.cache_key:
                kept = self._by_step.setdefault(step_identity(v.name), [])
                if not kept or kept[-1][1] != v.cache_key:
                    kept.append((generation, v.cache_key))

    def before(self, v: VertexState) -> tuple[int, str] | None:
        """The newest earlier result of `v`'s step that differs from its result now (None: none differs)."""
        for generation, key in reversed(self._by_step.get(step_identity(v.name), [])):
            if key != v.cache_key:
                return generation, key
        return None


def label(v: VertexState) -> str:
    return f"#{v.number} {v.name}"


def result_view(v: VertexState, pause: Pause | None, root: Path, engine: Engine) -> StepView | None:
    """`v`'s filesystem now: at an error pause of `v`, what the failed step left; a step finished at the pause,
    as the build handed it on; a finished or cached step, from the cache store (None: it has none yet)."""
    if pause is not None and v.id == pause.vertex.digest:
        if pause.reason == "error":
            return StepView(v.id, f"{label(v)}: {FAILED_FS}", lambda: failed_view(pause))
        return None  # not run yet: its input is the step before it
    results = pause.step.results if pause is not None else {}
    if v.id in results:
        chain = list(results[v.id].chain)
        return StepView(v.id, label(v), lambda: engine.chain_view(root, chain))
    if v.internal or v.state not in (DONE, CACHED) or not v.cache_key:
        return None
    return StepView(v.id, label(v), _kept(engine, root, v.cache_key))


def _kept(engine: Engine, root: Path, cache_key: str) -> ViewOpener:
    """Opens the result the cache store keeps for `cache_key`."""
    return lambda: engine.step_view(root, cache_key)


def step_views(model: BuildModel, pause: Pause | None, root: Path, engine: Engine,
               earlier: EarlierResults) -> list[StepView]:
    """Every filesystem `d` can compare now, in the graph's order: each step's result, preceded by its result
    in the last earlier build where it differed."""
    out: list[StepView] = []
    for vid in model.order:
        v = model.vertices[vid]
        if v.internal or v.source is None:
            continue
        now = result_view(v, pause, root, engine)
        if now is None:
            continue
        before = earlier.before(v)
        if before is not None:
            generation, key = before
            out.append(StepView(EARLIER + vid, f"{label(v)} · build #{generation}", _kept(engine, root, key)))
        out.append(now)
    return out


@contextmanager
def failed_view(pause: Pause) -> Iterator[Path]:
    """The filesystem a failed RUN left (its writable layer over its input), mounted by the build until the
    error pause ends; the view borrows it (a modal screen keeps the pause from ending under it)."""
    yield pause.workspace()


def diff_pair(views: list[StepView], selected: str) -> tuple[int, int]:
    """The two entries `d` starts with: the selected step's result (the last when it has none) as B, and the
    entry before it as A (its earlier build's result, or the step before it)."""
    ids = [s.id for s in views]
    second = ids.index(selected) if selected in ids else len(ids) - 1
    second = max(second, 1)
    return second - 1, second
