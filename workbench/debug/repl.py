"""`workbench debug`: a line REPL (prompt-toolkit) over a build that stops at breakpoints.

The build runs in a thread; this thread reads commands. Before the build starts, set breakpoints and
`continue` (or `next` to stop at the first step that runs). At a pause: `exec` a shell in the step,
`ls` / `cat` its files (paths start at its working directory; its mounts are seen) or another step's, `diff`
two steps, `next`, `continue`, `reload` after editing the Dockerfile, `abort`. Once the build has ended, its
finished and cached steps can still be looked at; `quit` leaves (the exit status is the build's).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from workbench.debug.commands import COMMANDS, Step, StepTable, help_lines, lookup
from workbench.debug.controller import Breakpoint, Debugger, Pause
from workbench.progress.events import BuildFinished, DebugPaused, Event, EventBus
from workbench.results import ViewError

if TYPE_CHECKING:
    from workbench.debug.fsview import StepFiles
    from workbench.engine import Engine

CLEAR_SCREEN = "\x1b[H\x1b[2J\x1b[3J"
"""Home, erase the screen, erase the scrollback (what `clear` writes)."""


class DebugRepl:
    """One debugging session: a build request, its debugger, and the command loop."""

    def __init__(self, make_request: Callable[[Debugger], Any], out: TextIO, breakpoints: Iterable[Breakpoint] = (),
                 break_on_error: bool = True, *, engine: Engine, dockerfile: Path | None = None) -> None:
        self.make_request = make_request
        self.engine = engine
        self.out = out
        self.debugger = Debugger(break_on_error=break_on_error)
        self.debugger.dockerfile = dockerfile
        self.steps = StepTable()
        self.thread: threading.Thread | None = None
        self.failure: str | None = None
        self.finished = False
        self.quitting = False
        self.quit_while_building = False
        self.told_end = False  # the user was told the build ended and what can still be done
        self._request: Any = None
        self._numbers: dict[Breakpoint, int] = {}  # as gdb: a breakpoint keeps its number until deleted
        self._cwd = "/"  # where relative paths start: the working directory of the last paused step
        for bp in breakpoints:
            self._add_breakpoint(bp)
            self._note(bp)

    # -- the build ----------------------------------------------------------------------------------

    def start(self, stepping: bool = False) -> None:
        from workbench.progress.plain import PlainPrinter
        from workbench.request import BuildFailure

        bus = EventBus()
        printer = PlainPrinter(self.out)
        bus.subscribe(self.steps.note)
        bus.subscribe(printer)
        bus.subscribe(self._announce)
        self.debugger.bus = bus
        self.debugger.restart()
        if stepping:
            self.debugger.resume_stepping()
        self._request = self.make_request(self.debugger)
        self.failure, self.finished, self.told_end = None, False, False

        def build() -> None:
            try:
                self.engine.build(self._request, bus)
            except BuildFailure as e:
                self.failure = e.message
            except Exception as e:  # noqa: BLE001 - shown to the user, the REPL goes on to exit cleanly
                self.failure = f"{type(e).__name__}: {e}"
            finally:
                self.finished = True
                self.debugger.build_ended()

        self.thread = threading.Thread(target=build, name="debug-build", daemon=True)
        self.thread.start()

    def _announce(self, event: Event) -> None:
        if isinstance(event, DebugPaused):
            where = f" (Dockerfile:{event.source.start_line})" if event.source else ""
            what = {"breakpoint": "Breakpoint", "step": "Stopped", "error": "Failed"}.get(event.reason, "Paused")
            self.out.write(f"\n{what} before: {event.name}{where}\n" if event.reason != "error"
                           else f"\n{what}: {event.name}{where}\n  {event.error}\n")
            self.out.flush()
        elif isinstance(event, BuildFinished):
            self.out.write("\nbuild finished\n" if not event.error else f"\nbuild failed: {event.error}\n")
            self.out.flush()

    def abort(self) -> None:
        cancel = getattr(self._request, "cancel", None)
        if cancel is not None:
            cancel.set()
        self.debugger.kill_shells()
        if self.debugger.current is not None:
            self.debugger.resume("abort")

    def wait(self) -> Pause | None:
        """Until the build pauses (the pause) or ends (None)."""
        while True:
            pause = self.debugger.wait_for_pause(0.2)
            if pause is not None or self.finished:
                return pause

    # -- commands -----------------------------------------------------------------------------------

    def run_command(self, line: str) -> bool:
        """Do one command; False when the REPL should wait for the build (it runs again)."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            self._say(f"error: {e}")
            return True
        if not words:
            return True
        cmd, args = words[0], words[1:]
        command = lookup(cmd)
        if command is None:
            close = [c.name for c in COMMANDS if c.name.startswith(cmd)]
            hint = f" (did you mean {close[0]}?)" if close else ""
            self._say(f"unknown command {cmd!r}{hint}; `help` lists them")
            return True
        try:
            return bool(getattr(self, f"cmd_{command.name}")(args))
        except (ValueError, OSError, RuntimeError, ViewError) as e:
            self._say(f"error: {e}")
            return True

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _pause(self) -> Pause:
        pause = self.debugger.current
        if pause is None:
            raise ValueError("the build is not stopped at a step (use `continue` or `next` first)")
        return pause

    def cmd_help(self, args: list[str]) -> bool:
        for line in help_lines(args[0] if args else None):
            self._say(line)
        return True

    # -- breakpoints, numbered as gdb numbers them ----------------------------------------------------

    def _add_breakpoint(self, bp: Breakpoint) -> int:
        if bp not in self.debugger.breakpoints:
            self.debugger.breakpoints.append(bp)
        return self._number(bp)

    def _number(self, bp: Breakpoint) -> int:
        if bp not in self._numbers:
            self._numbers[bp] = max(self._numbers.values(), default=0) + 1
        return self._numbers[bp]

    def _delete(self, bp: Breakpoint) -> None:
        self.debugger.breakpoints.remove(bp)
        self._say(f"deleted breakpoint {self._numbers.pop(bp, '?')} at {bp}")

    def cmd_break(self, args: list[str]) -> bool:
        if len(args) != 1:
            raise ValueError("usage: break LINE | break STAGE")
        bp = _breakpoint(args[0])
        self._say(f"breakpoint {self._add_breakpoint(bp)} at {bp}")
        self._note(bp)
        return True

    def _note(self, bp: Breakpoint) -> None:
        """Say where a breakpoint on a line with no step of its own (FROM scratch) stops, if anywhere."""
        from workbench.debug.stepless import read_targets

        target = read_targets(self.debugger.dockerfile).get(bp.line or 0) if self.debugger.dockerfile else None
        if target is not None:
            self._say(target.note(bp.line or 0))

    def cmd_breakpoints(self, args: list[str]) -> bool:
        if not self.debugger.breakpoints:
            self._say("no breakpoints (break on error is " + ("on" if self.debugger.break_on_error else "off") + ")")
        for bp in self.debugger.breakpoints:
            self._say(f"  {self._number(bp)}: {bp}")
        return True

    def cmd_delete(self, args: list[str]) -> bool:
        if not args:
            if not self.debugger.breakpoints:
                self._say("no breakpoints to delete")
            for bp in list(self.debugger.breakpoints):
                self._delete(bp)
            return True
        by_number = {self._number(bp): bp for bp in self.debugger.breakpoints}
        wanted = []
        for arg in args:
            if not arg.isdigit() or int(arg) not in by_number:
                raise ValueError(f"no breakpoint {arg} (`breakpoints` lists them)")
            wanted.append(by_number[int(arg)])
        for bp in wanted:
            self._delete(bp)
        return True

    def cmd_clear(self, args: list[str]) -> bool:
        if not args:
            if getattr(self.out, "isatty", lambda: False)():
                self.out.write(CLEAR_SCREEN)
                self.out.flush()
            return True
        if args[0] in ("breakpoints", "all"):
            return self.cmd_delete([])
        at = _breakpoint(args[0])
        if at not in self.debugger.breakpoints:
            raise ValueError(f"no breakpoint at {at}")
        self._delete(at)
        return True

    # -- running the build ----------------------------------------------------------------------------

    def _ended(self) -> None:
        if self.thread is not None and self.finished:
            raise ValueError("the build has ended: `run` builds again, `quit` leaves")

    def cmd_next(self, args: list[str]) -> bool:
        if self.thread is None:
            self.start(stepping=True)
        else:
            self._ended()
            self._pause()
            self.debugger.resume("next")
        return False

    def cmd_continue(self, args: list[str]) -> bool:
        if self.thread is None:
            self.start()
        else:
            self._ended()
            self._pause()
            self.debugger.resume("continue")
        return False

    def cmd_run(self, args: list[str]) -> bool:
        if self.thread is not None and not self.finished:
            raise ValueError("the build is running: `continue`, or `reload` to build again from here")
        if self.thread is not None:
            self.steps = StepTable()
        self.start()
        return False

    def cmd_abort(self, args: list[str]) -> bool:
        if self.thread is None:
            raise ValueError("the build has not started")
        self._ended()
        self.abort()
        return False

    def cmd_quit(self, args: list[str]) -> bool:
        self.quitting = True
        if self.thread is not None and not self.finished:
            self.quit_while_building = True
            self.abort()
        return False

    def tell_end(self) -> None:
        """Once per build: it has ended, and what can still be done."""
        if not self.told_end:
            self.told_end = True
            self._say("the build has ended: `steps`, `ls`/`cat` PATH STEP and `diff` look at its steps; "
                      "`run` builds again, `quit` leaves")

    def cmd_exec(self, args: list[str]) -> bool:
        pause = self._pause()
        argv = args or ["sh"]
        self.out.flush()
        code = self.debugger.exec(pause, argv)
        self._say(f"[exit code {code}]")
        return True

    # -- looking at files -------------------------------------------------------------------------------

    @contextmanager
    def _files(self, step_arg: str | None) -> Iterator[StepFiles]:
        """The files to look at: the paused step's as its process sees them (no STEP, or the paused one), or
        a finished / cached step's, relative paths starting where the last paused step worked."""
        from workbench.debug.fsview import StepFiles, step_files

        pause = self.debugger.current
        step = self.steps.get(step_arg) if step_arg is not None else None
        if step is None or (pause is not None and step.digest == pause.vertex.digest):
            if pause is None:
                raise ValueError("the build is not stopped at a step: name one (`ls PATH STEP`; `steps` lists them)")
            with step_files(pause.step) as files:
                self._cwd = files.cwd
                yield files
            return
        with self._step_root(step) as root:
            yield StepFiles(root, self._cwd)

    def _step_root(self, step: Step) -> AbstractContextManager[Path]:
        """A read-only view of a step's result: from the paused build while it runs, else through the engine
        by the step's cache key."""
        from workbench.results import mounted

        pause = self.debugger.current
        result = pause.step.results.get(step.digest) if pause is not None else None
        if result is not None:
            return mounted(pause.step.worker, result.chain)  # type: ignore[union-attr]
        if step.state in ("cached", "done") and step.cache_key and self._request is not None:
            return self.engine.step_view(self._request.root, step.cache_key)
        why = {"running": "it has not finished", "failed": "it failed (its files are seen only at its pause)"}
        raise ValueError(f"step {step.number} ({step.name}) has no files to show: "
                         + why.get(step.state, "its result is not kept"))

    def cmd_ls(self, args: list[str]) -> bool:
        from workbench.debug.fsview import list_dir

        if len(args) > 2:
            raise ValueError("usage: ls [PATH] [STEP]")
        with self._files(args[1] if len(args) > 1 else None) as files:
            lines = list_dir(files, args[0] if args else ".")
        for line in lines:
            self._say(line)
        return True

    def cmd_cat(self, args: list[str]) -> bool:
        from workbench.debug.fsview import read_file

        if not 1 <= len(args) <= 2:
            raise ValueError("usage: cat PATH [STEP]")
        with self._files(args[1] if len(args) > 1 else None) as files:
            data = read_file(files, args[0])
        self.out.write(data.decode("utf-8", "replace"))
        if data and not data.endswith(b"\n"):
            self.out.write("\n")
        self.out.flush()
        return True

    def cmd_diff(self, args: list[str]) -> bool:
        from workbench.debug.fsview import diff_trees, format_diff, summarize

        if len(args) != 2:
            raise ValueError("usage: diff STEP_A STEP_B")
        a, b = self.steps.get(args[0]), self.steps.get(args[1])
        with self._files(args[0]) as fa, self._files(args[1]) as fb:
            changes = diff_trees(fa.root, fb.root)
            details = format_diff(changes, fa.root, fb.root)
        self._say(f"step {a.number} → step {b.number}: {summarize(changes)}")
        if changes:
            self.page(details)
        return True

    def page(self, lines: list[str]) -> None:
        """Show `lines` through `$PAGER` (default `less -R`, as git runs it) when the output is a terminal."""
        text = "".join(line + "\n" for line in lines)
        pager = os.environ.get("PAGER", "less -R") if getattr(self.out, "isatty", lambda: False)() else ""
        argv = shlex.split(pager)
        if not argv or argv == ["cat"]:
            self.out.write(text)
            self.out.flush()
            return
        self.out.flush()
        env = dict(os.environ)
        env.setdefault("LESS", "FRX")  # quit at once when it fits the screen, keep colours, leave it on screen
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env)
        except OSError:
            self.out.write(text)
            self.out.flush()
            return
        on_main = threading.current_thread() is threading.main_thread()
        # ^C belongs to the pager; a handler (not SIG_IGN) so that the pager starts with the default
        old = signal.signal(signal.SIGINT, lambda _s, _f: None) if on_main else None
        try:
            proc.communicate(text.encode())
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def cmd_steps(self, args: list[str]) -> bool:
        pause = self.debugger.current
        if not self.steps.steps:
            self._say("no steps yet" + (": `continue` or `next` starts the build" if self.thread is None else ""))
        for step in self.steps.steps:
            here = pause is not None and pause.vertex.digest == step.digest
            state = "paused" if here else step.state
            line = f"  (line {step.line})" if step.line else ""
            self._say(f" {'*' if here else ' '}{step.number:>3}  {state:<7} {step.name}{line}")
        return True

    def cmd_info(self, args: list[str]) -> bool:
        pause = self.debugger.current
        if pause is not None:
            for key, value in pause.info().items():
                if isinstance(value, list):
                    self._say(f"{key}:")
                    for item in value:
                        self._say(f"    {item}")
                else:
                    self._say(f"{key}: {value}")
        elif self.thread is None:
            self._say("the build has not started: set breakpoints, then `continue` or `next`")
        self._say("steps:")
        for step in self.steps.steps:
            mark = "*" if pause is not None and pause.vertex.digest == step.digest else " "
            self._say(f" {mark}{step.number:>3}  {step.name}" + (f"  (line {step.line})" if step.line else ""))
        return True

    def cmd_reload(self, args: list[str]) -> bool:
        pause = self._pause()
        line = pause.vertex.source.start_line if pause.vertex.source else None
        self._say("reloading: building again up to " + (f"line {line}" if line else "here") + " from the cache")
        self.abort()
        assert self.thread is not None
        self.thread.join()
        if line is not None:
            self.debugger.one_shot = Breakpoint(line=line)
        self.steps = StepTable()
        self.start()
        return False


def _breakpoint(where: str) -> Breakpoint:
    """`break 12` / `break build`: a breakpoint at a Dockerfile line or a stage."""
    return Breakpoint(line=int(where)) if where.isdigit() else Breakpoint(stage=where)


def run_repl(repl: DebugRepl, history: Path | None, start: bool) -> int:
    """The command loop; returns the build's exit status (0 done, 1 failed, 130 aborted by quit)."""
    interactive = sys.stdin.isatty()
    read = _prompt_reader(repl, history) if interactive else _line_reader()
    if start:
        repl.start()
    def stop(_signum: int, _frame: object) -> None:  # the terminal closed / we were told to end: clean up
        repl.quitting = True
        repl.abort()
        raise KeyboardInterrupt

    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        while True:
            if repl.thread is not None and not repl.told_end:
                try:
                    pause = repl.wait()
                except KeyboardInterrupt:
                    repl.abort()
                    continue
                if pause is None:
                    if repl.quitting:
                        break
                    repl.tell_end()  # as gdb after the program exits: its steps can still be looked at
            try:
                line = read()
            except KeyboardInterrupt:
                continue
            except EOFError:
                repl.run_command("quit")
                line = None
            if line is not None and repl.run_command(line):
                continue
            if repl.quitting:
                if repl.thread is not None:
                    repl.thread.join()
                break
    except KeyboardInterrupt:
        repl.abort()
        if repl.thread is not None:
            repl.thread.join()
    finally:
        repl.debugger.kill_shells()
        signal.signal(signal.SIGTERM, old)
    if repl.thread is None:
        return 0
    if repl.quit_while_building and repl.failure is not None:
        return 130
    return 0 if repl.failure is None else 1


def _line_reader() -> Callable[[], str]:
    def read() -> str:
        sys.stdout.write("(debug) ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.strip()

    return read


def _prompt_reader(repl: DebugRepl, history: Path | None) -> Callable[[], str]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    from workbench.debug.completion import DebugCompleter

    if history is not None:
        history.parent.mkdir(parents=True, exist_ok=True)
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(history)) if history is not None else InMemoryHistory(),
        completer=DebugCompleter(repl), complete_while_typing=False)

    def read() -> str:
        return session.prompt("(debug) ")

    return read
