"""The TUI's prediction of the next build (issue 18 item 11), without Textual: the request to predict, its
steps mapped onto the graph on screen, the status line, and the check of the build against it.

The engine predicts on the new LLB (workbench.prediction); the graph on screen is the last build's, so a
predicted step is found there by its name, else by its instruction in the same stage, else by its Dockerfile
line. A step with no node there (a new instruction) is listed apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.progress.trace import CACHED, DONE, FAILED, PAUSED, RUNNING
from workbench.solver.predict import PredictedStep, Prediction
from workbench.tui.model import BuildModel, VertexState, stage_of

if TYPE_CHECKING:
    from workbench.request import BuildRequest
    from workbench.solver.hooks import StepHooks
    from workbench.tui.source import EventSource

_NUMBER = re.compile(r"^\[(?:(?P<stage>[^\]\s]+) )? *\d+/\d+\] ")


def request_for(source: EventSource, no_cache: bool, hooks: StepHooks | None = None) -> BuildRequest | None:
    """The request the source's next build will make (None: the source does not build, e.g. a replay)."""
    from workbench.request import BuildRequest
    from workbench.solver.session import Session
    from workbench.tui.source import LiveBuildSource

    if not isinstance(source, LiveBuildSource) or source.remote:  # a remote daemon keeps the cache: no prediction
        return None
    session = source.session if isinstance(source.session, Session) else Session()
    return BuildRequest(context=source.context, dockerfile=source.dockerfile, build_args=dict(source.build_args),
                        target=source.target, no_cache=no_cache, root=source.root, session=session,
                        cdi_spec_dirs=list(source.cdi_spec_dirs), config=source.config, debugger=hooks)


def _instruction(name: str) -> str:
    """A step's name less its `[stage n/N]` prefix (the numbers shift when a line is added)."""
    return _NUMBER.sub("", name)


@dataclass
class ShownPrediction:
    """A prediction as the graph on screen shows it."""

    predicted: dict[str, str] = field(default_factory=dict)
    """Vertex id on screen -> why the next build re-runs it."""
    new: list[PredictedStep] = field(default_factory=list)
    """Steps that will run and have no node on screen."""
    runs: list[PredictedStep] = field(default_factory=list)
    """The steps the next build will run, inputs first."""

    def note(self) -> str:
        """The status bar's words: `next build: 3 steps re-run`."""
        n = len(self.runs)
        return f"next build: {n} step{'s' if n != 1 else ''} re-run" if n else "next build: all cached"

    def message(self, limit: int = 4) -> str:
        """A notification: the steps that will run and why (the first `limit`), those new marked so."""
        new = {s.digest for s in self.new}
        lines = [self.note()]
        lines += [f"{'new: ' if s.digest in new else ''}{s.name}: {s.reason}" for s in self.runs[:limit]]
        if len(self.runs) > limit:
            lines.append(f"… and {len(self.runs) - limit} more")
        return "\n".join(lines)


def on_screen(prediction: Prediction, model: BuildModel) -> ShownPrediction:
    """`prediction`'s steps mapped onto `model`'s graph (by name, else instruction and stage, else line)."""
    shown = [v for v in (model.vertices[i] for i in model.order) if not v.internal]
    by_name = {v.name: v for v in shown}
    by_text: dict[tuple[str, str], VertexState] = {}
    by_line: dict[int, VertexState] = {}
    for v in shown:
        by_text.setdefault((v.stage, _instruction(v.name)), v)
        if v.source is not None:
            by_line.setdefault(v.source.start_line, v)
    out = ShownPrediction()
    found: dict[str, VertexState] = {}  # predicted step -> its node
    taken: set[str] = set()
    for step in prediction.steps:  # every step, cached ones too: a node is one step's
        node = by_name.get(step.name) or by_text.get((stage_of(step.name), _instruction(step.name)))
        if node is not None and node.id not in taken:
            found[step.digest] = node
            taken.add(node.id)
    for step in prediction.steps:  # an edited instruction: the node at its line
        node = by_line.get(step.source.start_line) if step.source is not None else None
        if step.runs and step.digest not in found and node is not None and node.id not in taken:
            found[step.digest] = node
            taken.add(node.id)
    for step in prediction.steps:
        if step.runs:
            out.runs.append(step)
            if step.digest in found:
                out.predicted[found[step.digest].id] = step.reason or ""
            else:
                out.new.append(step)
    return out


_RAN = {DONE: True, FAILED: True, RUNNING: True, PAUSED: True, CACHED: False}


def outcome(model: BuildModel) -> dict[str, bool]:
    """Vertex digest -> whether the build ran it (True) or took it from the cache (False); steps that never
    started, or were canceled before they ran, are left out."""
    return {vid: _RAN[v.state] for vid, v in model.vertices.items()
            if not v.internal and v.state in _RAN and not (v.state == FAILED and v.error == "canceled")}


def expecting(prediction: Prediction) -> str:
    """The status bar's words while the predicted build runs."""
    n = sum(1 for s in prediction.steps if s.runs)
    return f"predicted: {n} step{'s' if n != 1 else ''} to re-run"


def check(prediction: Prediction, model: BuildModel) -> str:
    """Hold the finished build in `model` to `prediction`: each wrong step becomes a warning in its log; the
    status line's words are returned."""
    ran = outcome(model)
    wrong = prediction.check(ran)
    for step, line in wrong:
        model.warn(f"prediction: {line}", step.digest)
    if wrong:
        return f"prediction wrong for {len(wrong)} step{'s' if len(wrong) != 1 else ''} (see the logs)"
    judged = sum(1 for s in prediction.steps if s.digest in ran)
    return "prediction held" if judged else ""
