"""One DAP session: requests drive a `workbench.dap.target.Target` (the local engine's debugger, or a BuildKit
daemon's gateway with `--addr`) over a build that runs in a thread; the build's events and stops go out as DAP
events.

`serve` reads frames until the client disconnects or goes away; either way the build is aborted, shells
killed and the build thread joined (so its mounts and containers are gone) before it returns.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from workbench.dap.evaluate import Terminals, captured
from workbench.dap.launch import Launch, LaunchError, breakpoint_lines, parse_launch
from workbench.dap.protocol import Decoder, Malformed, Message, Writer
from workbench.dap.target import STALE, LocalTarget, Stop, Target, TargetError
from workbench.dap.variables import References, frame_scopes, scopes
from workbench.debug.controller import Breakpoint
from workbench.progress.events import BuildFinished, DebugPaused, Event, EventBus, VertexLog, VertexStarted
from workbench.progress.redact import Redactor

if TYPE_CHECKING:
    from workbench.engine import Engine

THREAD = 1
CLOSE_WAIT = 120.0
"""Seconds `close` waits for the build thread to clean up (its mounts, containers) before giving up on it."""
NOT_STOPPED = "the build is not stopped at a step"


class RequestError(Exception):
    """A request that cannot be done: its error response's message."""


class _Console(io.TextIOBase):
    """A text stream whose complete lines become `output` events (the plain progress printer writes here)."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self._send, self._buf = send, ""

    def write(self, s: str) -> int:
        self._buf += s
        if "\n" in self._buf:
            head, _, self._buf = self._buf.rpartition("\n")
            self._send(head + "\n")
        return len(s)


class Session:
    """The state of one client: its launch, breakpoints, the build and the current stop."""

    def __init__(self, writer: Writer, engine: Engine, cwd: Path | None = None) -> None:
        self.out = writer
        self.engine = engine
        self.cwd = cwd or Path.cwd()
        self.target: Target = LocalTarget(engine)
        self.launch: Launch | None = None
        self.configured = False
        self.client: dict[str, Any] = {}
        self.refs = References()
        self.frames: list[Any] = []
        self.thread: threading.Thread | None = None
        self.redact: Callable[[str], str] = lambda s: s
        self.redactor: Redactor | None = None
        self.ended = threading.Event()
        self._first_stop = True
        self._pause_asked = False
        self._reasons: dict[int, str] = {}
        self._eval_cancel = threading.Event()
        """Set when the stop the running evaluates look at is left (resume) or the build is aborted."""
        self._evaluating: dict[int, str] = {}  # running evaluates: seq -> command
        self._sources: dict[str, Any] = {}
        self._lines: list[int] = []
        self.terminals = Terminals(writer, lambda text: self.redact(text))

    # -- requests ------------------------------------------------------------------------------------

    def _state_tmp(self) -> Path | None:
        """The launched build's state root's tmp folder (the reaper sweeps what a killed adapter leaves there)."""
        from workbench.request import default_root

        if self.launch is None:
            return None
        return (self.launch.root or default_root()) / "tmp"

    def handle(self, msg: Message) -> bool:
        """Answer one request; False once the session is over (disconnect). Whatever goes wrong while
        answering one request (the answer itself included) becomes its error response, never the end."""
        command, seq = str(msg.get("command") or ""), msg.get("seq")
        try:
            return self._handle(msg, command, seq)
        except Exception as e:  # noqa: BLE001 - answered, the session goes on
            if isinstance(seq, int) and msg.get("type") == "request":
                said = self.redact(f"{command}: {type(e).__name__}: {e}")
                self.out.error(seq, command, said.encode("utf-8", "backslashreplace").decode("utf-8"))
            return True

    def _handle(self, msg: Message, command: str, seq: Any) -> bool:
        if msg.get("type") == "response":  # runInTerminal's answer
            self.terminals.answered(msg)
            return True
        args = msg.get("arguments") or {}
        handler = getattr(self, "on_" + command, None) if command.isidentifier() else None
        if handler is None:
            self.out.error(seq, command, f"unknown request {command!r}")
            return True
        try:
            body = handler(args, seq)
        except (RequestError, LaunchError, TargetError) as e:
            self.out.error(seq, command, str(e))
            return True
        if body is not _LATER:
            self.out.response(seq, command, body)
        return command != "disconnect"

    def on_initialize(self, args: dict[str, Any], seq: int) -> object:
        self.client = args
        self.out.response(seq, "initialize", {
            "supportsConfigurationDoneRequest": True, "supportsEvaluateForHovers": False,
            "supportsTerminateRequest": True, "supportsRestartRequest": False, "supportsSetVariable": False,
            "supportsStepBack": False, "supportsSingleThreadExecutionRequests": False,
            "supportsLoadedSourcesRequest": False, "supportsExceptionInfoRequest": True,
            "exceptionBreakpointFilters": [{"filter": "error", "label": "Failed step", "default": True,
                                            "description": "Stop when a RUN step fails, with its filesystem "
                                                           "as it left it"}]})
        self.out.event("initialized")
        return _LATER

    def on_launch(self, args: dict[str, Any], seq: int) -> None:
        if self.launch is not None:
            raise RequestError("this session already launched a build")
        launch = parse_launch(args, self.cwd)
        from workbench.solver.session import secret_values

        if launch.session:
            self.redactor = Redactor(secret_values(launch.session))
            self.redact = self.redactor.text
        self.launch = launch
        if launch.address is not None:
            from workbench.dap.remote_target import RemoteTarget

            remote = RemoteTarget(launch.address, lambda text: self.out.output(self.redact(text), "important"))
            remote.breakpoints, remote.break_on_error = self.target.breakpoints, self.target.break_on_error
            self.target = remote
        if launch.no_debug:
            self.target.break_on_error = False
        if self._lines:
            self._set_lines(self._lines, launch.dockerfile)
        if self.configured:
            self._start()

    def on_configurationDone(self, args: dict[str, Any], seq: int) -> None:
        self.configured = True
        if self.launch is not None and self.thread is None:
            self._start()

    def on_setBreakpoints(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        source = args.get("source") or {}
        path = Path(source.get("path") or "")
        lines = [b.get("line") for b in args.get("breakpoints") or []] or list(args.get("lines") or [])
        if not all(isinstance(n, int) for n in lines):
            raise RequestError("setBreakpoints: each breakpoint needs an integer `line`")
        if self.launch is not None and path.resolve() != self.launch.dockerfile:
            return {"breakpoints": [{"verified": False, "line": n,
                                     "message": f"not the Dockerfile being debugged ({self.launch.dockerfile})"}
                                    for n in lines]}
        self._lines = lines
        return {"breakpoints": self._set_lines(lines, path.resolve())}

    def _set_lines(self, lines: list[int], dockerfile: Path) -> list[dict[str, Any]]:
        where = breakpoint_lines(dockerfile)
        out: list[dict[str, Any]] = []
        bps: list[Breakpoint] = []
        for n in lines:
            at = where.get(n)
            if isinstance(at, int):
                bps.append(Breakpoint(line=at))
                out.append({"verified": True, "line": at, "id": len(out) + 1})
            else:
                out.append({"verified": False, "line": n, "id": len(out) + 1,
                            "message": at if isinstance(at, str) else f"no build step at line {n}"})
        if not (self.launch is not None and self.launch.no_debug):
            self.target.breakpoints = bps
        return out

    def on_setExceptionBreakpoints(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        filters = args.get("filters") or []
        on = "error" in filters and not (self.launch is not None and self.launch.no_debug)
        self.target.break_on_error = on
        return {"breakpoints": [{"verified": f == "error"} for f in filters]}

    def on_threads(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        return {"threads": [{"id": THREAD, "name": "build"}]}

    def _paused(self) -> Stop:
        pause = self.target.current
        if pause is None:
            raise RequestError(NOT_STOPPED)
        return pause

    def _source(self) -> dict[str, Any]:
        df = self.launch.dockerfile if self.launch else Path("Dockerfile")
        return {"name": df.name, "path": str(df)}

    def on_stackTrace(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        pause = self._paused()
        chain = [pause.vertex]
        seen = {pause.vertex.digest}
        todo = list(pause.vertex.inputs)
        while todo:  # the steps that lead to it, nearest first
            v = todo.pop(0)
            if v.digest in seen:
                continue
            seen.add(v.digest)
            if v.source is not None and not v.hidden and v.name:
                chain.append(v)
            todo.extend(v.inputs)
        self.frames = chain
        start = int(args.get("startFrame") or 0)
        levels = int(args.get("levels") or 0)
        shown = chain[start:start + levels] if levels else chain[start:]
        frames = [{"id": start + i + 1, "name": self.redact(v.name), "line": v.source.start_line if v.source else 0,
                   "column": 1, "source": self._source()} for i, v in enumerate(shown)]
        return {"stackFrames": frames, "totalFrames": len(chain)}

    def on_scopes(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        pause = self._paused()
        frame = int(args.get("frameId") or 1)
        if frame != 1 and 0 < frame <= len(self.frames):
            return {"scopes": frame_scopes(self.frames[frame - 1], self.refs, self.redact)}
        reason = self._reasons.get(id(pause), pause.reason)
        build_args = self.launch.build_args if self.launch else {}
        return {"scopes": scopes(pause, reason, build_args, self.refs, self.redact,
                                 lambda p: self.target.list_dir(pause, p))}

    def on_variables(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        from workbench.results import ViewError

        provider = self.refs.get(int(args.get("variablesReference") or 0))
        if provider is None or self.target.current is None:
            raise RequestError("no such variables here (the build went on since they were shown)")
        try:
            return {"variables": provider(int(args.get("start") or 0), int(args.get("count") or 0) or None)}
        except (ViewError, OSError, TargetError) as e:
            raise RequestError(str(e)) from None

    def on_source(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        path = (args.get("source") or {}).get("path")
        from workbench.frontend.dockerfile.source import DockerfileReadError, read_dockerfile

        df = self.launch.dockerfile if self.launch else None
        if df is None or (path and Path(path).resolve() != df):
            raise RequestError("only the launched Dockerfile's source is known")
        try:
            text = read_dockerfile(df)
        except DockerfileReadError as e:
            raise RequestError(f"source: {e}") from None
        return {"content": os.fsencode(text).decode("utf-8", "replace"), "mimeType": "text/x-dockerfile"}

    def on_exceptionInfo(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        pause = self._paused()
        if pause.reason != "error":
            raise RequestError("the build is not stopped at a failed step")
        return {"exceptionId": "error", "description": self.redact(pause.error), "breakMode": "always",
                "details": {"message": self.redact(pause.error), "typeName": self.redact(pause.vertex.name)}}

    # -- execution ------------------------------------------------------------------------------------

    def _resume(self, how: str) -> None:
        self._paused()
        self.refs.clear()
        self.frames = []
        self._leave_stop(how)
        self.target.resume(how)

    def _leave_stop(self, how: str) -> None:
        """What runs in the stopped step ends before the build goes on (a command that never ends must not
        hold it there): running evaluates are killed, terminals not yet attached closed, shells ended."""
        old, self._eval_cancel = self._eval_cancel, threading.Event()
        old.set()
        for expr in list(self._evaluating.values()):
            self.out.output(self.redact(f"evaluate {expr!r} was stopped: the build went on ({how})\n"), "important")
        if self.terminals.open_count():
            self.out.output(f"the shells in the terminal were ended: the build went on ({how})\n", "important")
        self.terminals.close()
        self.target.kill_shells()

    def on_continue(self, args: dict[str, Any], seq: int) -> dict[str, Any]:
        self._resume("continue")
        return {"allThreadsContinued": True}

    def on_next(self, args: dict[str, Any], seq: int) -> None:
        self._resume("next")

    on_stepIn = on_next
    on_stepOut = on_continue

    def on_pause(self, args: dict[str, Any], seq: int) -> None:
        if self.target.current is None:
            self.target.step()
            self._pause_asked = True

    def on_terminate(self, args: dict[str, Any], seq: int) -> None:
        self.out.response(seq, "terminate")
        if self.launch is None:
            return _LATER  # type: ignore[return-value]  # nothing ran: nothing ends (no exited/terminated)
        self.abort()
        if self.thread is None:
            self._finish(None, aborted=True)
        return _LATER  # type: ignore[return-value]

    def on_disconnect(self, args: dict[str, Any], seq: int) -> None:
        self.close()
        if self.launch is not None and self.thread is None and not self.ended.is_set():
            self._finish(None, aborted=True)

    def on_evaluate(self, args: dict[str, Any], seq: int) -> object:
        expr = str(args.get("expression") or "").strip()
        pause = self._paused()
        if not expr:
            raise RequestError("evaluate: an empty command")
        if expr == "exec" or expr.startswith("exec "):
            if not self.client.get("supportsRunInTerminalRequest"):
                raise RequestError("this client cannot open a terminal (no runInTerminal): use evaluate with a "
                                   "command, or `workbench debug` for an interactive shell")
            return self.terminals.open(self.target, pause, shlex.split(expr[4:]) or ["sh"], self.cwd,
                                       self._state_tmp())
        self._evaluating[seq] = expr
        threading.Thread(target=self._evaluate, args=(pause, expr, seq, self._eval_cancel), name="dap-evaluate",
                         daemon=True).start()
        return _LATER

    def _evaluate(self, pause: Stop, expr: str, seq: int, cancel: threading.Event) -> None:
        try:
            text = captured(self.target, pause, expr, cancel, self.redactor)
        except Exception as e:  # noqa: BLE001 - the answer says it
            self.out.error(seq, "evaluate", self.redact(f"evaluate: {e}"))
            return
        finally:
            self._evaluating.pop(seq, None)
        if cancel.is_set():
            self.out.error(seq, "evaluate", self.redact(f"evaluate: stopped: {STALE}"))
            return
        self.out.response(seq, "evaluate", {"result": self.redact(text), "variablesReference": 0})

    # -- the build ------------------------------------------------------------------------------------

    def _start(self) -> None:
        from workbench.progress.plain import PlainPrinter
        from workbench.request import BuildFailure

        assert self.launch is not None
        if self.launch.stop_on_entry and not self.launch.no_debug:
            self.target.step()
        bus = EventBus()
        console = _Console(lambda text: self.out.output(self.redact(text), "console"))
        printer = PlainPrinter(cast(TextIO, console))
        bus.subscribe(lambda ev: None if isinstance(ev, VertexLog | DebugPaused) else printer(ev))
        bus.subscribe(self._on_event)
        launch, target = self.launch, self.target

        def build() -> None:
            failure: str | None = None
            try:
                target.build(launch, bus)
            except BuildFailure as e:
                failure = e.message
            except Exception as e:  # noqa: BLE001 - told to the client as the build's end
                failure = f"{type(e).__name__}: {e}"
            finally:
                target.build_ended()
                self._finish(failure)

        self.thread = threading.Thread(target=build, name="dap-build", daemon=True)
        self.thread.start()

    def _finish(self, failure: str | None, aborted: bool = False) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        if not aborted:
            self.out.output("build finished\n" if failure is None else self.redact(f"build failed: {failure}\n"),
                            "console" if failure is None else "important")
        self.out.event("exited", {"exitCode": 0 if failure is None and not aborted else 1})
        self.out.event("terminated")

    def _on_event(self, ev: Event) -> None:
        from workbench.solver.why import BREAKPOINT_RERUN

        if isinstance(ev, VertexStarted):
            self._sources[ev.vertex] = ev.source
            if ev.miss_reason == BREAKPOINT_RERUN:
                self.out.output(self.redact(f"step {ev.name} runs again to stop at the breakpoint (it was "
                                            "cached)\n"), "important")
        elif isinstance(ev, VertexLog):
            extra: dict[str, Any] = {}
            src = self._sources.get(ev.vertex)
            if src is not None:
                extra = {"source": self._source(), "line": src.start_line}
            self.out.output(self.redact(ev.data.decode("utf-8", "replace")), "stderr" if ev.stream == 2 else "stdout",
                            **extra)
        elif isinstance(ev, DebugPaused):
            # the pause becomes current just after this event: tell the client once it is
            threading.Thread(target=self._stopped_at, name="dap-stopped", daemon=True).start()
        elif isinstance(ev, BuildFinished) and ev.error:
            pass  # said once the build thread ends

    def _stopped_at(self) -> None:
        pause = self.target.wait_for_pause(30)
        if pause is None:
            return
        reason = {"breakpoint": "breakpoint", "step": "step", "error": "exception"}.get(pause.reason, "pause")
        if self._first_stop and self.launch is not None and self.launch.stop_on_entry and reason == "step":
            reason = "entry"
        elif self._pause_asked and reason == "step":
            reason = "pause"
        self._first_stop = self._pause_asked = False
        self._reasons[id(pause)] = reason
        body: dict[str, Any] = {"reason": reason, "threadId": THREAD, "allThreadsStopped": True,
                                "description": self.redact(f"{reason} before {pause.vertex.name}")}
        if reason == "exception":
            body.update(description=self.redact(f"failed: {pause.vertex.name}"), text=self.redact(pause.error))
        self.out.event("stopped", body)

    def abort(self) -> None:
        """Stop the build: cancel it, end shells and evaluations, let every pause go with `abort`."""
        self.target.breakpoints = []
        self.target.break_on_error = False
        self.target.cancel()
        self._eval_cancel.set()
        self.terminals.close()
        self.target.kill_shells()
        if self.target.current is not None:
            self.target.resume("abort")

    def close(self, wait: float = CLOSE_WAIT) -> bool:
        """The client is done (disconnect, or gone): abort and wait until the build has cleaned up, at most
        `wait` seconds; past that, say so on stderr and give up on it (False)."""
        self.abort()
        end = time.monotonic() + wait
        while self.thread is not None and self.thread.is_alive():
            if time.monotonic() > end:
                print(f"workbench dap: the build did not end within {wait:g} s of being aborted; leaving it "
                      "(its mounts and containers may stay until this process exits)", file=sys.stderr, flush=True)
                return False
            if self.target.current is not None:
                self.target.resume("abort")  # a step that was held behind the one aborted
            self.thread.join(0.2)
        return True


_LATER = object()
"""A handler's return value: it answers by itself (now or from another thread)."""


def serve(read: Callable[[], bytes], write: Callable[[bytes], None], engine: Engine, cwd: Path | None = None,
          live: set[Session] | None = None) -> None:
    """One session: `read` returns the next bytes from the client (b"" at its end), `write` sends bytes;
    `live` holds the session while it runs (for a server that must close it when it stops)."""
    writer = Writer(write)
    session = Session(writer, engine, cwd)
    decoder = Decoder()
    if live is not None:
        live.add(session)
    try:
        while True:
            try:
                data = read()
            except OSError:
                data = b""
            if not data:
                return  # the client went away: as a disconnect
            for msg in decoder.feed(data):
                if isinstance(msg, Malformed):
                    writer.malformed(msg)
                elif not session.handle(msg):
                    return
    finally:
        session.close()
        writer.closed = True
        if live is not None:
            live.discard(session)
