"""A command in a build's result on a BuildKit daemon, through its gateway (as `buildx debug --invoke` does).

The order, as BuildKit's client.Build: open the session; call Control.Solve with no frontend and no definition
(the daemon then waits for a gateway client to drive the build); on the same connection, with the metadata
`buildkit-controlapi-buildid: <the Solve's Ref>`, call LLBBridge.Ping (the caps), LLBBridge.Solve with the
Dockerfile frontend or our own graph's pb.Definition (the result's ref), NewContainer with that ref mounted at /,
ExecProcess (Init, then stdin as File messages and its EOF, sent at the process's Exit at the latest; the daemon
answers Started, File output, Exit, Done), ReleaseContainer, and Return with the result, which ends Control.Solve.
The build is evaluated in LLBBridge.Solve (`Evaluate`, cap gateway.solve.evaluate), so
a failed step comes back there with `errdefs.Solve+json` in the status details: the ids of its inputs and of what
it left in its mounts (kept for this build), and its op. With `on_error`, the command then runs on those mounts,
with the step's env, workdir and user, before the error is Returned (the Solve fails with it).

With our graph, a breakpoint (a `Stop`) first solves each input of its step as a Definition of its own (the steps
before it run then) and runs the command on them at the step's mounts; the full build goes on after. With a
terminal as stdin the process gets a tty (InitMessage.Tty, resized as the local terminal is), as buildx does.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any

from workbench.remote.control import SERVICE, Control, ControlError
from workbench.remote.gateway import BRIDGE, Gateway
from workbench.remote.solve import SolvePlan, new_id, open_session, solve_request, watch_status
from workbench.remote.status import StatusFold

if TYPE_CHECKING:
    from workbench.progress.events import EventBus
    from workbench.remote.engine import RemoteEngine
    from workbench.request import BuildRequest

EXEC_CAP = "gateway.exec"
EVALUATE_CAP = "gateway.solve.evaluate"
SOLVE_ERROR = "github.com/moby/buildkit/errdefs.Solve+json"


class RemoteDebugError(Exception):
    """One line: what the daemon could not do (its build failed, or it has no gateway containers)."""


@dataclass
class Invocation:
    """What to run in the result: argv (in the image's env, workdir and user), its stdin and where output goes."""

    argv: list[str]
    stdin: IO[bytes] | None = None
    stdout: Callable[[bytes], object] = field(default=lambda b: None)
    stderr: Callable[[bytes], object] = field(default=lambda b: None)
    network_host: bool = False
    tty: bool = False
    """Ask for a terminal: stdin (a local terminal, put in raw mode meanwhile) and fd 1 go to one pty; its size
    follows the local terminal's (SIGWINCH)."""
    on_call: Callable[[Any], object] | None = None
    """Told the ExecProcess call once made: canceling it ends the process (Docker 20.10's BuildKit does not kill
    it at ReleaseContainer)."""


@dataclass
class Outcome:
    """How it went: the build's error ("" when it built) and the command's exit code (None: it did not run)."""

    error: str = ""
    code: int | None = None


def run_in_result(control: Control, plan: SolvePlan, invocation: Invocation, on_status: Callable[[Any], None],
                  shared: str = "", on_error: Callable[[str, str], bool] | None = None,
                  image: dict[str, Any] | None = None, stops: Sequence[Stop] = (),
                  on_stop: Callable[[Stop], None] = lambda stop: None) -> Outcome:
    """Build `plan` (frontend and attrs, or our `definition` with its `image` config) through the daemon's gateway
    and run `invocation` in the result; first, for each of `stops` (breakpoints, in build order), in what that
    step is given (`on_stop` told before).
    When a step fails, `on_error(error, where)` is told, and the command runs in what that step left if it
    answers True (and the daemon told the step's mounts). RemoteDebugError for a daemon without gateway
    containers, ControlError for one that cannot be reached."""
    import grpc

    from workbench.remote.proto import control_pb2 as cpb

    ref, session_id = new_id(), new_id()
    # the session serves the context, Dockerfile and secrets only: no output comes back, no agent is lent
    pipe, server = open_session(control, replace(plan, output=None, ssh={}), session_id, shared,
                                default_name="debug")
    channel = control.channel.grpc
    status_call, reader = watch_status(channel, ref, on_status)
    # no frontend and no definition: the daemon waits for us to drive the build through the gateway
    gateway_plan = replace(plan, frontend="", exporters=[], output=None, definition=b"", result_metadata=None)
    solve = channel.unary_unary(SERVICE + "Solve", request_serializer=cpb.SolveRequest.SerializeToString,
                                response_deserializer=cpb.SolveResponse.FromString)
    future = solve.future(solve_request(gateway_plan, ref, session_id))
    bridge = Bridge(channel, ref)
    caps: list[str] = []
    try:
        try:
            caps = bridge.wait_registered(future)
            for stop in stops:
                mounts = bridge.stop_mounts(stop, evaluate=EVALUATE_CAP in caps)
                on_stop(stop)
                bridge.run_in(bridge.new_container(mounts, invocation.network_host), stop.config, invocation)
            result = bridge.solve(plan.frontend, plan.frontend_attrs, evaluate=EVALUATE_CAP in caps,
                                  definition=plan.definition)
            if image is not None:
                result.config = image.get("config") or {}
            container = bridge.new_container(bridge.result_mounts(result), invocation.network_host)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise control.fault(e, "Solve") from None
            error = _one_line(e.details() or e.code().name)
            try:
                failed = failed_step(e)
                where = (f"what {failed.name or 'the failed step'} left" if failed is not None else
                         "(its error does not name the failed step's filesystems)" if EVALUATE_CAP in caps else
                         f"(its gateway cannot evaluate a build: cap {EVALUATE_CAP} is off)")
                code = None
                if on_error is not None and on_error(error, where) and failed is not None:
                    code = bridge.run_in(bridge.new_container(failed.mounts, invocation.network_host),
                                         failed.config, invocation)
            finally:
                bridge.give_up(error)
            return Outcome(error, code)
        try:
            code = bridge.run_in(container, result.config, invocation)
        finally:
            bridge.finish(result)
        try:
            future.result(timeout=60)
        except grpc.RpcError as e:
            raise RemoteDebugError(_one_line(e.details() or e.code().name)) from None
        return Outcome("", code)
    except grpc.RpcError as e:
        raise control.fault(e, "gateway") if e.code() == grpc.StatusCode.UNAVAILABLE else \
            RemoteDebugError(_one_line(e.details() or e.code().name)) from None
    finally:
        future.cancel()
        reader.join(1.0)
        status_call.cancel()
        pipe.close()
        server.close()


@dataclass
class StopMount:
    dest: str
    definition: bytes  # the input, as a Definition of its own; b"": a tmpfs
    selector: str = ""
    readonly: bool = False


@dataclass
class Stop:
    """A breakpoint: the step `name` (at `where`), given its inputs at their mounts, with its env, workdir and
    user (as an image config)."""

    name: str
    where: str
    mounts: list[StopMount]
    config: dict[str, Any]


@dataclass
class OurGraph:
    """Our own build graph for the gateway: the plan (its `definition`), the image config, the status fold that
    names the daemon's vertices as ours; the target vertex and how to marshal any vertex (for breakpoints)."""

    plan: SolvePlan
    image: dict[str, Any]
    fold: StatusFold
    vertex: Any
    marshal: Callable[[Any], bytes]

    def stop_before(self, v: Any) -> Stop:
        """A breakpoint before `v`: a RUN's mounts (the rootfs and its binds and tmpfs; its secrets, ssh sockets
        and caches are its own) with its env, workdir and user; for any other step, its first input (a source:
        itself) at /."""
        from workbench.llb.ops import ExecOp

        where = f"line {v.source.start_line}" if v.source is not None else "its step"
        op = v.op
        if not isinstance(op, ExecOp):  # a source (FROM) has no input: a shell in what it gives
            return Stop(v.name, where, [StopMount("/", self.marshal(v.inputs[0] if v.inputs else v))], {})
        mounts = [StopMount("/", self.marshal(v.inputs[0]))] if v.inputs else []
        for m in op.mounts:
            if m.type == "tmpfs":
                mounts.append(StopMount(m.target, b""))
            elif m.type == "bind" and 0 <= m.input < len(v.inputs):
                mounts.append(StopMount(m.target, self.marshal(v.inputs[m.input]),
                                        "" if m.source in ("", "/") else m.source, m.readonly))
        return Stop(v.name, where, mounts, {"Env": list(op.env), "WorkingDir": op.cwd, "User": op.user})


def our_graph(engine: RemoteEngine, control: Control, request: BuildRequest, bus: EventBus) -> OurGraph:
    """`request`'s Dockerfile converted by the local frontend and marshalled for this daemon, as `build --addr`
    sends it; BuildFailure (located, one line) for what it cannot build."""
    from workbench.remote.engine import our_digests
    from workbench.remote.graph import convert_request

    graph = convert_request(request, bus)
    marshalled = engine.marshal_graph(control, graph, request)
    plan = engine.graph_plan(request, marshalled, graph.image)
    fold = StatusFold(bus.emit, graph=our_digests(marshalled), sources=marshalled.locations, names=marshalled.names)
    return OurGraph(plan, graph.image, fold, graph.vertex,
                    lambda v: engine.marshal_graph(control, replace(graph, vertex=v), request).data)


@dataclass
class GatewayResult:
    ref: str
    config: dict[str, Any]  # the image config ("containerimage.config"), for env, workdir and user


class Bridge(Gateway):
    """LLBBridge calls for the build `build_id` (the Control.Solve's Ref), with containers."""

    def wait_registered(self, solve_future: Any) -> list[str]:
        """Ping until the daemon knows the build; the gateway caps it enables. RemoteDebugError when it has no
        containers (`gateway.exec`)."""
        caps = super().wait_registered(solve_future)
        if EXEC_CAP not in caps:
            raise RemoteDebugError(f"this daemon's gateway has no containers (cap {EXEC_CAP} is off)")
        return caps

    def solve(self, frontend: str, attrs: dict[str, str], evaluate: bool = False,
              definition: bytes = b"") -> GatewayResult:
        """Solve with `frontend` (and `attrs`), or a serialised pb.Definition; the result's ref and image config."""
        from workbench.remote.proto import gateway_pb2 as gw
        from workbench.remote.proto import ops_pb2 as ops

        req = gw.SolveRequest(allowResultReturn=True, Evaluate=evaluate)
        if definition:
            req.Definition.CopyFrom(ops.Definition.FromString(definition))
        else:
            req.Frontend = frontend
            req.FrontendOpt.update(attrs)
        res = self.call("Solve", req, gw.SolveResponse).result
        which = res.WhichOneof("result")
        if which == "ref":
            ref = res.ref.id
        elif which == "refs" and len(res.refs.refs) == 1:
            ref = next(iter(res.refs.refs.values())).id
        elif which == "refDeprecated":
            ref = res.refDeprecated
        else:
            raise RemoteDebugError("the build made several results (one per platform): pass one --platform")
        config: dict[str, Any] = {}
        raw = res.metadata.get("containerimage.config")
        if raw:
            try:
                config = json.loads(raw).get("config") or {}
            except ValueError:
                pass
        return GatewayResult(ref, config)

    def stop_mounts(self, stop: Stop, evaluate: bool) -> list[Any]:
        """The mounts of a breakpoint's step, each input solved here (the steps before it run now)."""
        from workbench.remote.proto import ops_pb2 as ops

        mounts = []
        for m in stop.mounts:
            if not m.definition:
                mounts.append(ops.Mount(dest=m.dest, mountType=ops.TMPFS, input=-1, output=-1))
                continue
            ref = self.solve("", {}, evaluate=evaluate, definition=m.definition).ref
            mounts.append(ops.Mount(dest=m.dest, selector=m.selector, resultID=ref, readonly=m.readonly,
                                    mountType=ops.BIND, input=-1, output=-1))
        return mounts

    def result_mounts(self, result: GatewayResult) -> list[Any]:
        """`result` mounted at / (writable: changes go to a throw-away layer)."""
        from workbench.remote.proto import ops_pb2 as ops

        return [ops.Mount(dest="/", resultID=result.ref, mountType=ops.BIND, input=-1, output=-1)]

    def new_container(self, mounts: list[Any], network_host: bool) -> str:
        """A container on `mounts` (pb.Mount with resultIDs); its id. A lazy result is built here: a daemon that
        does not evaluate in Solve fails here with the build's error."""
        from workbench.remote.proto import gateway_pb2 as gw
        from workbench.remote.proto import ops_pb2 as ops

        container_id = new_id()
        self.call("NewContainer", gw.NewContainerRequest(
            ContainerID=container_id, Mounts=mounts, Network=ops.HOST if network_host else ops.UNSET),
            gw.NewContainerResponse)
        return container_id

    def run_in(self, container_id: str, config: dict[str, Any], inv: Invocation) -> int:
        """`inv` in the container (then released); its exit code."""
        import grpc

        from workbench.remote.proto import gateway_pb2 as gw

        try:
            return self._exec(container_id, config, inv)
        finally:
            try:
                self.call("ReleaseContainer", gw.ReleaseContainerRequest(ContainerID=container_id),
                            gw.ReleaseContainerResponse, timeout=30)
            except grpc.RpcError as e:  # the release answers with the process's error ("exit code: 7"): told
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    raise

    def _exec(self, container_id: str, config: dict[str, Any], inv: Invocation) -> int:
        from workbench.remote.proto import gateway_pb2 as gw
        from workbench.remote.proto import ops_pb2 as ops

        pid = new_id()
        outbox: queue.Queue[Any] = queue.Queue()
        env = list(config.get("Env") or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
        if inv.tty and not any(e.startswith("TERM=") for e in env):
            env.append(f"TERM={os.environ.get('TERM') or 'xterm'}")  # as `docker run -t`: programs need one
        meta = ops.Meta(args=inv.argv, env=env, cwd=config.get("WorkingDir") or "/", user=config.get("User") or "")
        outbox.put(gw.ExecMessage(ProcessID=pid, Init=gw.InitMessage(ContainerID=container_id, Meta=meta,
                                                                        Fds=[0, 1, 2], Tty=inv.tty)))

        def requests() -> Iterator[Any]:
            while (msg := outbox.get()) is not None:
                yield msg

        stream = self.channel.stream_stream(BRIDGE + "ExecProcess",
                                            request_serializer=gw.ExecMessage.SerializeToString,
                                            response_deserializer=gw.ExecMessage.FromString)
        call = stream(requests(), metadata=self.metadata)
        if inv.on_call is not None:
            inv.on_call(call)
        code: int | None = None
        terminal = _Terminal(inv.stdin, pid, outbox) if inv.tty else None
        feed = _StdinFeed(inv.stdin, pid, outbox)
        try:
            for msg in call:
                kind = msg.WhichOneof("Input")
                if kind == "Started":
                    if terminal is not None:
                        terminal.start()
                    feed.start()
                elif kind == "File" and msg.File.Data:
                    (inv.stdout if msg.File.Fd == 1 else inv.stderr)(msg.File.Data)
                elif kind == "Exit":
                    code = msg.Exit.Code
                    feed.close()  # the daemon says Done only once fd 0 is closed
                    if msg.Exit.Error.message and msg.Exit.Code == 0:
                        raise RemoteDebugError(_one_line(msg.Exit.Error.message))
                elif kind == "Done":
                    break
        finally:
            feed.close()  # also when the stream ends without Exit: no feeder left reading our stdin
            if terminal is not None:
                terminal.stop()
            outbox.put(None)
            call.cancel()
        if code is None:
            raise RemoteDebugError("the daemon ended the process without an exit code")
        return code

    def finish(self, result: GatewayResult | None, error: str = "") -> None:
        """Return: the result (the Solve ends well) or the error (it fails with it)."""
        from workbench.remote.proto import gateway_pb2 as gw

        if result is not None:
            req = gw.ReturnRequest(result=gw.Result(ref=gw.Ref(id=result.ref)))
        else:
            req = gw.ReturnRequest(error=gw.RPCStatus(code=2, message=error))
        self.call("Return", req, gw.ReturnResponse, timeout=30)

    def give_up(self, error: str) -> None:
        """Return the error, so the waiting Control.Solve ends (best effort: the daemon may be gone)."""
        try:
            self.finish(None, error)
        except Exception:
            pass


@dataclass
class FailedStep:
    """A failed exec step as the daemon tells it: its name, its mounts (on the results it left or was given)
    and its env, workdir and user (as an image config)."""

    name: str
    mounts: list[Any]
    config: dict[str, Any]


def failed_step(error: Any) -> FailedStep | None:
    """The failed exec step in a gateway Solve's error (`errdefs.Solve+json`); None when it names none (not an
    exec, or a daemon that does not say)."""
    from workbench.remote.proto import gateway_pb2 as gw
    from workbench.remote.proto import ops_pb2 as ops

    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not raw:
        return None
    details = [d for d in gw.RPCStatus.FromString(raw).details if d.type_url == SOLVE_ERROR]
    if not details:
        return None
    try:
        solve = json.loads(details[0].value)
    except ValueError:
        return None
    op = solve.get("op") or {}
    exec_op = op.get("exec")
    if not exec_op:
        return None
    inputs, left = solve.get("inputIDs") or [], solve.get("mountIDs") or []
    mounts = []
    for i, m in enumerate(exec_op.get("mounts") or []):
        kind = int(m.get("mountType") or 0)
        if kind == ops.TMPFS:
            mounts.append(ops.Mount(dest=m.get("dest", ""), mountType=ops.TMPFS, input=-1, output=-1))
            continue
        if kind != ops.BIND:
            continue  # secrets, ssh sockets and cache mounts are the step's own: not mounted in the shell
        n = int(m.get("input") or 0)  # Go's JSON leaves out zeros
        result = left[i] if i < len(left) and left[i] else inputs[n] if 0 <= n < len(inputs) else ""
        mounts.append(ops.Mount(dest=m.get("dest", ""), selector=m.get("selector", ""), resultID=result,
                                readonly=bool(m.get("readonly")), mountType=ops.BIND, input=-1, output=-1))
    meta = exec_op.get("meta") or {}
    name = (solve.get("description") or {}).get("llb.customname", "")
    return FailedStep(name, mounts, {"Env": meta.get("env") or [], "WorkingDir": meta.get("cwd") or "/",
                                     "User": meta.get("user") or ""})


class _Terminal:
    """The local terminal while a tty process runs: raw mode (keys go to the process as typed, Ctrl-C included),
    and its size sent now and at each SIGWINCH; both restored by stop(), and by a SIGTERM/SIGHUP/SIGQUIT or
    the interpreter's exit that comes first."""

    FATAL = ("SIGTERM", "SIGHUP", "SIGQUIT")

    def __init__(self, stdin: IO[bytes] | None, pid: str, outbox: queue.Queue[Any]) -> None:
        try:
            self.fd = stdin.fileno() if stdin is not None else -1
        except (OSError, ValueError):  # not a file (a test's pipe object): no terminal to set up
            self.fd = -1
        self.pid, self.outbox = pid, outbox
        self.saved: Any = None
        self.started = False
        self.handlers: dict[int, Any] = {}  # signal → the handler it had before start()

    def start(self) -> None:
        """Once: a second Started from the daemon must not save the raw settings as the ones to restore."""
        import atexit
        import signal
        import termios
        import tty

        if self.started:
            return
        self.started = True
        if self.fd < 0 or not os.isatty(self.fd):
            return
        self.saved = termios.tcgetattr(self.fd)
        atexit.register(self.stop)
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for name in self.FATAL:
                sig = getattr(signal, name)
                if signal.getsignal(sig) != signal.SIG_IGN:  # under nohup a hang-up is not fatal: left alone
                    self.handlers[sig] = signal.signal(sig, self._fatal)
            self.handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda *_: self.resize())
        tty.setraw(self.fd)
        self.resize()

    def _fatal(self, signum: int, frame: Any) -> None:
        """The terminal back as it was, then the signal's own action (the process dies of it, as it would have)."""
        import signal

        self.stop()
        previous = signal.getsignal(signum)
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def resize(self) -> None:
        from workbench.remote.proto import gateway_pb2 as gw

        try:
            cols, rows = os.get_terminal_size(self.fd)
        except OSError:
            return
        self.outbox.put(gw.ExecMessage(ProcessID=self.pid, Resize=gw.ResizeMessage(Rows=rows, Cols=cols)))

    def stop(self) -> None:
        import atexit
        import signal
        import termios

        handlers, self.handlers = self.handlers, {}
        for sig, handler in handlers.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)
        saved, self.saved = self.saved, None
        if saved is not None:
            atexit.unregister(self.stop)
            try:
                termios.tcsetattr(self.fd, termios.TCSANOW, saved)
            except termios.error:  # the terminal is gone (hung up): nothing left to restore
                pass


class _StdinFeed:
    """Our stdin to the process's fd 0, then its EOF: at the end of our stdin, or when the process exits (the
    daemon says Done only once fd 0 is closed, and a terminal never ends by itself)."""

    def __init__(self, stdin: IO[bytes] | None, pid: str, outbox: queue.Queue[Any]) -> None:
        self.stdin, self.pid, self.outbox = stdin, pid, outbox
        self.lock = threading.Lock()
        self.started = self.closed = False

    def start(self) -> None:
        """Once: a second Started from the daemon starts no second reader."""
        with self.lock:
            if self.started or self.closed:
                return
            self.started = True
        threading.Thread(target=self._run, name="exec-stdin", daemon=True).start()

    def _run(self) -> None:
        from workbench.remote.proto import gateway_pb2 as gw

        if self.stdin is not None:
            read = getattr(self.stdin, "read1", self.stdin.read)
            try:  # the fd itself: a thread left blocked in a buffered read aborts the interpreter's exit
                fd = self.stdin.fileno()
                read = self._reader(fd)
            except (OSError, ValueError, AttributeError):
                pass
            while chunk := read(32 * 1024):
                with self.lock:
                    if self.closed:
                        return
                    self.outbox.put(gw.ExecMessage(ProcessID=self.pid, File=gw.FdMessage(Fd=0, Data=chunk)))
        self.close()

    def _reader(self, fd: int) -> Callable[[int], bytes]:
        """Reads of `fd` that stop once closed, so a finished process's feeder takes no key meant for the next
        one (a terminal is read again by the next shell)."""
        import select

        def read(n: int) -> bytes:
            while not self.closed:
                if select.select([fd], [], [], 0.1)[0]:
                    return os.read(fd, n)
            return b""
        return read

    def close(self) -> None:
        from workbench.remote.proto import gateway_pb2 as gw

        with self.lock:
            if not self.closed:  # a second EOF is an error that ends the stream
                self.closed = True
                self.outbox.put(gw.ExecMessage(ProcessID=self.pid, File=gw.FdMessage(Fd=0, EOF=True)))


def rpc_error_line(error: Any) -> str:
    """A failed gateway or Control call's error, in one line (its gRPC wrapping taken off)."""
    return _one_line(error.details() or error.code().name)


def _one_line(text: str) -> str:
    marker = "desc = "
    while text.startswith("rpc error:") and marker in text:
        text = text.split(marker, 1)[1]
    return text.strip().splitlines()[0] if text.strip() else "the daemon gave no reason"


__all__ = ["ControlError", "Invocation", "Outcome", "RemoteDebugError", "run_in_result"]
