"""The words of the `workbench debug` REPL, shared by the REPL (workbench.debug.repl) and its tab completion
(workbench.debug.completion): its commands (one table: `help` prints it, the REPL dispatches by it) and the
build's steps, numbered as the commands name them."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.progress.events import Event, VertexCached, VertexCompleted, VertexFailed, VertexStarted


@dataclass(frozen=True)
class Command:
    """A REPL command: the handler `cmd_<name>` runs it; `aliases` are other words for it."""

    name: str
    usage: str
    text: str
    aliases: tuple[str, ...] = ()


COMMANDS: tuple[Command, ...] = (
    Command("break", "break LINE|STAGE", "stop before a Dockerfile line / a stage", ("b",)),
    Command("breakpoints", "breakpoints", "list the breakpoints, by number"),
    Command("delete", "delete [N ...]", "remove breakpoints N, or all of them", ("d",)),
    Command("continue", "continue", "run to the next breakpoint (starts the build)", ("c",)),
    Command("next", "next", "run the paused step, stop before the next", ("n",)),
    Command("run", "run", "start the build (again, once it has ended)"),
    Command("exec", "exec [CMD ...]", "run CMD (default sh) in the paused step"),
    Command("ls", "ls [PATH] [STEP]", "list a dir of the paused step, or of STEP"),
    Command("cat", "cat PATH [STEP]", "print a file of the paused step, or of STEP"),
    Command("diff", "diff STEP_A STEP_B", "two steps' changes: a summary, then paged"),
    Command("steps", "steps", "the build's steps: number, state, name"),
    Command("info", "info", "where the build is stopped, what it sees"),
    Command("reload", "reload", "re-read the Dockerfile, rebuild up to here"),
    Command("abort", "abort", "cancel the build"),
    Command("clear", "clear [breakpoints|LINE|STAGE]", "clear the screen / remove breakpoints"),
    Command("help", "help [COMMAND]", "this list, or one command"),
    Command("quit", "quit", "abort the build (if running) and leave", ("exit", "q")),
)
"""Every command of the REPL, in the order `help` lists them."""


def lookup(word: str) -> Command | None:
    """The command `word` names (by name or alias)."""
    for c in COMMANDS:
        if word == c.name or word in c.aliases:
            return c
    return None


def help_lines(word: str | None = None) -> list[str]:
    """`help`'s output: every command (or the one `word` names) with its usage, aliases and what it does."""
    chosen = list(COMMANDS) if word is None else [c for c in COMMANDS if c is lookup(word)]
    if not chosen:
        raise ValueError(f"no command {word!r}; `help` lists them")
    shown = {c.name: c.usage.replace(c.name, f"{c.name} ({', '.join(c.aliases)})", 1) if c.aliases else c.usage
             for c in COMMANDS}
    width = max(len(u) for u in shown.values())
    lines = [f"  {shown[c.name]:<{width}}  {c.text}" for c in chosen]
    if word is None:
        lines += ["", "  Paths start at the paused step's working directory and see its mounts;",
                  "  STEP is a number or a name as `steps` lists them."]
    return lines


@dataclass
class Step:
    number: int
    digest: str
    name: str
    line: int | None
    state: str = "running"  # "running", "cached", "done" or "failed"
    cache_key: str = ""


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
        known = self.by_digest.get(getattr(event, "vertex", ""))
        if known is None:
            return
        if isinstance(event, VertexStarted):
            known.state = "running"
        elif isinstance(event, VertexCached | VertexCompleted):
            known.state = "cached" if isinstance(event, VertexCached) else "done"
            known.cache_key = event.cache_key or known.cache_key
        elif isinstance(event, VertexFailed):
            known.state = "failed"

    def get(self, text: str) -> Step:
        """The step `text` names: its number, its name, its `[stage n/N]` label, or a part of its name that
        only it has."""
        if text.isdigit():
            if not 1 <= int(text) <= len(self.steps):
                raise ValueError(f"no step {text}: steps are 1 to {len(self.steps)} (see `steps`)")
            return self.steps[int(text) - 1]
        label = text.strip("[]")
        for test in (lambda s: s.name == text, lambda s: label.split() in (_label(s.name), _label(s.name)[-1:]),
                     lambda s: text in s.name):
            found = [s for s in self.steps if test(s)]
            if len(found) == 1:
                return found[0]
            if found:
                names = ", ".join(f"{s.number} ({s.name})" for s in found)
                raise ValueError(f"{text!r} names several steps: {names}; give its number")
        raise ValueError(f"no step {text!r} (see `steps`)")


def _label(name: str) -> list[str]:
    """The words of a step's label: `["2/4"]` of `[2/4] RUN …`, `["build", "2/4"]` of `[build 2/4] RUN …`."""
    return name[1:name.find("]")].split() if name.startswith("[") and "]" in name else []
