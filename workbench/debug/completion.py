"""Tab completion for `workbench debug`: commands, step numbers, and paths inside the paused step (from its
working directory, its mounts included)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from workbench.debug.commands import COMMANDS, StepTable, lookup
from workbench.debug.controller import Debugger

_PATH_COMMANDS = {"ls", "cat"}
_STEP_COMMANDS = {"diff"}


class Completable(Protocol):
    """What completion reads of the REPL (workbench.debug.repl.DebugRepl): its steps so far and its debugger."""

    steps: StepTable
    debugger: Debugger


class DebugCompleter(Completer):
    def __init__(self, repl: Completable) -> None:
        self.repl = repl

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = text.split()
        if not words or (len(words) == 1 and not text.endswith(" ")):
            yield from _commands(words[0] if words else "")
            return
        command = lookup(words[0])
        cmd = command.name if command is not None else words[0]
        current = "" if text.endswith(" ") else words[-1]
        position = len(words) - (0 if text.endswith(" ") else 1)
        if cmd == "help" and position == 1:
            yield from _commands(current)
        elif cmd in _STEP_COMMANDS or (cmd in _PATH_COMMANDS and position == 2):
            for step in self.repl.steps.steps:
                if str(step.number).startswith(current):
                    yield Completion(str(step.number), -len(current), display_meta=step.name)
        elif cmd in _PATH_COMMANDS and position == 1:
            yield from self._paths(current)

    def _paths(self, current: str) -> Iterator[Completion]:
        """Entries of the paused step's filesystem below the typed directory."""
        from workbench.debug.fsview import entries, step_files
        from workbench.results import ViewError

        pause = self.repl.debugger.current
        if pause is None:
            return
        directory, partial = posixpath.split(current)
        try:
            with step_files(pause.step) as files:
                found = entries(files, directory or ".")
        except (OSError, ValueError, ViewError):
            return
        for entry in found:
            if entry.name.startswith(partial):
                full = posixpath.join(directory, entry.name) + ("/" if entry.is_dir else "")
                yield Completion(full, -len(current))


def _commands(prefix: str) -> Iterator[Completion]:
    for c in COMMANDS:
        if c.name.startswith(prefix):
            yield Completion(c.name, -len(prefix), display_meta=c.text)


