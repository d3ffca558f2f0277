"""The words of the `workbench debug` REPL, shared by the REPL (workbench.debug.repl) and its tab completion
(workbench.debug.completion): its commands and the build's steps, numbered as the commands name them."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.progress.events import Event, VertexCached, VertexStarted

COMMANDS = {
    "break": "break LINE | break STAGE — stop before the step at a Dockerfile line / a stage's first step",
    "breakpoints": "list the breakpoints",
    "clear": "clear [N|all] — remove breakpoint N (from `breakpoints`) or all of them",
    "next": "run the paused step and stop before the next one",
    "continue": "run to the next breakpoint (also starts the build)",
    "exec": "exec [CMD ...] — run CMD (default: sh) inside the paused step, on this terminal",
    "ls": "ls [PATH] [STEP] — list a directory of the paused step (or of step STEP)",
    "cat": "cat PATH [STEP] — print a file of the paused step (or of step STEP)",
    "diff": "diff STEP_A STEP_B — files added / changed / removed between two steps",
    "reload": "re-read the Dockerfile and build again up to where you are, from the cache",
    "info": "where the build is stopped and what the step sees; the steps so far",
    "abort": "cancel the build",
    "help": "this list",
    "quit": "abort the build (if running) and leave",
}
"""Command -> its help line (`help` prints them; completion offers the names)."""


@dataclass
class Step:
    number: int
    digest: str
    name: str
    line: int | None


@dataclass
class StepTable:
    """Steps in the order the build reported them (cached or started), numbered from 1."""

    steps: list[Step] = field(default_factory=list)
    by_digest: dict[str, Step] = field(default_factory=dict)

    def note(self, event: Event) -> None:
        if isinstance(event, VertexStarted | VertexCached) and event.vertex not in self.by_digest:
            if event.vertex.startswith("internal:") or event.source is None:
                return
            step = Step(len(self.steps) + 1, event.vertex, event.name, event.source.start_line)
            self.steps.append(step)
            self.by_digest[event.vertex] = step

    def get(self, text: str) -> Step:
        if not text.isdigit() or not 1 <= int(text) <= len(self.steps):
            raise ValueError(f"no step {text!r}: steps are 1 to {len(self.steps)} (see `info`)")
        return self.steps[int(text) - 1]
