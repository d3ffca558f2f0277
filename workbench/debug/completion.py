"""Tab completion for `workbench debug`: commands, step numbers, and paths inside the paused step."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from typing import Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from workbench.debug.commands import COMMANDS, StepTable
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
            prefix = words[0] if words else ""
            for name in COMMANDS:
                if name.startswith(prefix):
                    yield Completion(name, -len(prefix), display_meta=COMMANDS[name].split(" — ")[-1])
            return
        cmd = words[0]
        current = "" if text.endswith(" ") else words[-1]
        position = len(words) - (0 if text.endswith(" ") else 1)
        if cmd in _STEP_COMMANDS or (cmd in _PATH_COMMANDS and position == 2):
            for step in self.repl.steps.steps:
                if str(step.number).startswith(current):
                    yield Completion(str(step.number), -len(current), display_meta=step.name)
        elif cmd in _PATH_COMMANDS and position == 1:
            yield from self._paths(current)

    def _paths(self, current: str) -> Iterator[Completion]:
        """Entries of the paused step's filesystem below the typed directory."""
        from workbench.fsutil.paths import resolve_in_root

        pause = self.repl.debugger.current
        if pause is None:
            return
        directory, partial = posixpath.split(current)
        names: list[tuple[str, bool]] = []

        def collect(root: object) -> None:
            host = resolve_in_root(root, directory or "/")  # type: ignore[arg-type]
            if host.is_dir():
                for name in sorted(os.listdir(host)):
                    if name.startswith(partial):
                        names.append((name, (host / name).is_dir() and not (host / name).is_symlink()))

        try:
            collect(pause.workspace())
        except OSError:
            return
        for name, is_dir in names:
            full = posixpath.join(directory, name) + ("/" if is_dir else "")
            yield Completion(full, -len(current))
