"""`workbench debug`: a line REPL (prompt-toolkit) over a build that stops at breakpoints.

The build runs in a thread; this thread reads commands. Before the build starts, set breakpoints and
`continue` (or `next` to stop at the first step that runs). At a pause: `exec` a shell in the step,
`ls` / `cat` its files or another step's, `diff` two steps, `next`, `continue`, `reload` after editing the
Dockerfile, `abort`. The REPL ends when the build ends (its exit status is the build's) or on `quit`.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from workbench.debug.commands import COMMANDS, StepTable
from workbench.debug.controller import Breakpoint, Debugger, Pause
from workbench.progress.events import BuildFinished, DebugPaused, Event, EventBus

if TYPE_CHECKING:
    from workbench.engine import Engine


class DebugRepl:
    """One debugging session: a build request, its debugger, and the command loop."""

    def __init__(self, make_request: Callable[[Debugger], Any], out: TextIO, breakpoints: Iterable[Breakpoint] = (),
                 break_on_error: bool = True, *, engine: Engine) -> None:
        self.make_request = make_request
        self.engine = engine
        self.out = out
        self.debugger = Debugger(break_on_error=break_on_error)
        self.debugger.breakpoints.extend(breakpoints)
        self.steps = StepTable()
        self.thread: threading.Thread | None = None
        self.failure: str | None = None
        self.finished = False
        self.quitting = False
        self._request: Any = None

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
        self.failure, self.finished = None, False

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
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is None:
            close = [c for c in COMMANDS if c.startswith(cmd)]
            hint = f" (did you mean {close[0]}?)" if close else ""
            self._say(f"unknown command {cmd!r}{hint}; `help` lists them")
            return True
        try:
            return bool(handler(args))
        except (ValueError, OSError, RuntimeError) as e:
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
        for name, text in COMMANDS.items():
            self._say(f"  {name:<12} {text}")
        return True

    def cmd_break(self, args: list[str]) -> bool:
        if len(args) != 1:
            raise ValueError("usage: break LINE | break STAGE")
        bp = Breakpoint(line=int(args[0])) if args[0].isdigit() else Breakpoint(stage=args[0])
        if bp not in self.debugger.breakpoints:
            self.debugger.breakpoints.append(bp)
        self._say(f"breakpoint {self.debugger.breakpoints.index(bp) + 1} at {bp}")
        return True

    def cmd_breakpoints(self, args: list[str]) -> bool:
        if not self.debugger.breakpoints:
            self._say("no breakpoints (break on error is " + ("on" if self.debugger.break_on_error else "off") + ")")
        for n, bp in enumerate(self.debugger.breakpoints, 1):
            self._say(f"  {n}: {bp}")
        return True

    def cmd_clear(self, args: list[str]) -> bool:
        if not args or args[0] == "all":
            self.debugger.breakpoints.clear()
            self._say("cleared all breakpoints")
        else:
            n = int(args[0])
            if not 1 <= n <= len(self.debugger.breakpoints):
                raise ValueError(f"no breakpoint {n}")
            self._say(f"cleared breakpoint {n} at {self.debugger.breakpoints.pop(n - 1)}")
        return True

    def cmd_next(self, args: list[str]) -> bool:
        if self.thread is None:
            self.start(stepping=True)
        else:
            self._pause()
            self.debugger.resume("next")
        return False

    def cmd_continue(self, args: list[str]) -> bool:
        if self.thread is None:
            self.start()
        else:
            self._pause()
            self.debugger.resume("continue")
        return False

    cmd_run = cmd_continue
    cmd_c = cmd_continue
    cmd_n = cmd_next

    def cmd_abort(self, args: list[str]) -> bool:
        if self.thread is None:
            raise ValueError("the build has not started")
        self.abort()
        return False

    def cmd_quit(self, args: list[str]) -> bool:
        self.quitting = True
        if self.thread is not None and not self.finished:
            self.abort()
        return False

    cmd_exit = cmd_quit

    def cmd_exec(self, args: list[str]) -> bool:
        pause = self._pause()
        argv = args or ["sh"]
        self.out.flush()
        code = self.debugger.exec(pause, argv)
        self._say(f"[exit code {code}]")
        return True

    def _view_step(self, step_arg: str | None) -> tuple[Pause, list[str] | None]:
        """The filesystem to look at: the paused step's (None) or a finished step's chain."""
        pause = self._pause()
        if step_arg is None:
            return pause, None
        step = self.steps.get(step_arg)
        result = pause.step.results.get(step.digest)
        if result is None:
            raise ValueError(f"step {step.number} ({step.name}) has no result yet")
        return pause, result.chain

    def _with_root(self, step_arg: str | None, fn: Callable[[Path], None]) -> None:
        from workbench.results import mounted

        pause, chain = self._view_step(step_arg)
        if chain is None:
            fn(pause.workspace())
            return
        with mounted(pause.step.worker, chain) as root:
            fn(root)

    def cmd_ls(self, args: list[str]) -> bool:
        from workbench.debug.fsview import list_dir
        from workbench.results import ViewError

        path = args[0] if args else "/"

        def show(root: Path) -> None:
            try:
                for line in list_dir(root, path):
                    self._say(line)
            except ViewError as e:
                self._say(f"error: {e}")

        self._with_root(args[1] if len(args) > 1 else None, show)
        return True

    def cmd_cat(self, args: list[str]) -> bool:
        from workbench.debug.fsview import read_file
        from workbench.results import ViewError

        if not args:
            raise ValueError("usage: cat PATH [STEP]")

        def show(root: Path) -> None:
            try:
                self.out.write(read_file(root, args[0]).decode("utf-8", "replace"))
                self.out.flush()
            except ViewError as e:
                self._say(f"error: {e}")

        self._with_root(args[1] if len(args) > 1 else None, show)
        return True

    def cmd_diff(self, args: list[str]) -> bool:
        from workbench.debug.fsview import diff_trees, format_diff
        from workbench.results import mounted

        if len(args) != 2:
            raise ValueError("usage: diff STEP_A STEP_B")
        pause, a = self._view_step(args[0])
        _, b = self._view_step(args[1])
        assert a is not None and b is not None
        with mounted(pause.step.worker, a) as ra, mounted(pause.step.worker, b) as rb:
            for line in format_diff(diff_trees(ra, rb), ra, rb):
                self._say(line)
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
            if repl.thread is not None:
                try:
                    pause = repl.wait()
                except KeyboardInterrupt:
                    repl.abort()
                    continue
                if pause is None:
                    break
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
    if repl.quitting and repl.failure is not None:
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
