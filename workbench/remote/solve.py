"""One Solve on a BuildKit daemon: open the session (our side of the build: context, Dockerfile, secrets,
credentials, health), call Solve with its Status stream beside it, and close the session at the end.

Setting `cancel` (or Ctrl-C in the calling thread) cancels the Solve RPC; the daemon then cancels the job and its
vertices end with "context canceled".
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.remote.control import SERVICE, Control, ControlError
from workbench.remote.session.filesend import Output
from workbench.remote.session.pipe import safe_session_name
from workbench.solver.session import SecretSource

if TYPE_CHECKING:
    from workbench.remote.session.content import LocalCacheStore

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
CLOSE_GRACE = 5.0  # seconds the end of a build waits for the session to close
STATUS_GRACE = 3.0  # buildctl too lets the Status stream run this long after Solve returns


class SolveFailed(Exception):
    """The daemon ended the solve with an error; str() is its message, `details` BuildKit's error details
    (type_url, JSON value): the failed vertex, its source lines."""

    def __init__(self, message: str, details: list[tuple[str, bytes]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class SolveCanceled(Exception):
    """The solve was canceled (the request's cancel event, or Ctrl-C)."""


@dataclass(frozen=True)
class Exporter:
    type: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class SolvePlan:
    """What to ask of the daemon: a frontend with its attributes, or our own graph (`definition`), the exporters,
    the session's directories."""

    frontend: str
    frontend_attrs: dict[str, str] = field(default_factory=dict)
    exporters: list[Exporter] = field(default_factory=list)
    legacy_exporter: bool = False
    """Send the exporter in fields 3/4 only (BuildKit v0.8, Docker 20.10, reads nothing else)."""
    entitlements: list[str] = field(default_factory=list)
    dirs: dict[str, Path] = field(default_factory=dict)
    secrets: Mapping[str, SecretSource] = field(default_factory=dict)
    name: str = ""  # the session's name (the context's folder)
    output: Output | None = None  # the output the daemon sends back through the session (exporter 0)
    ssh: Mapping[str, str | Path] = field(default_factory=dict)  # ssh id -> agent socket, forwarded to the build
    cache_imports: list[Exporter] = field(default_factory=list)  # `--cache-from`, as CacheOptionsEntry
    cache_exports: list[Exporter] = field(default_factory=list)  # `--cache-to`
    content_stores: dict[str, LocalCacheStore] = field(default_factory=dict)  # `type=local` caches, by store id
    cache_tags: dict[str, str] = field(default_factory=dict)  # store id -> tag of a `--cache-to type=local`
    registry_hosts: frozenset[str] | None = None  # the hosts the session's Auth answers for (None: any)
    warnings: list[str] = field(default_factory=list)  # said before the build (a local cache not imported)
    definition: bytes = b""
    """A serialised pb.Definition to solve instead of a frontend."""
    result_metadata: dict[str, bytes] | None = None
    """Set: the definition goes through the gateway (LLBBridge.Solve then Return) with this result metadata
    (`containerimage.config`), for an exporter that reads the config only from there (Docker 20.10's moby)."""


def new_id() -> str:
    """25 characters of base36, as BuildKit's identity.NewID()."""
    return "".join(_random.choice(_ALPHABET) for _ in range(25))


def shared_key(context: Path, root: Path) -> str:
    """Stable per context and state root, so the daemon's copy of the context is reused (incremental
    transfers), and secret: the daemon reuses the copy made under a key for whoever names that key, so a key
    anyone could compute (host name and path) would let another user of the daemon read or plant files in
    this context. Hence the root's random node ID in it, as Docker's CLI mixes in its `.buildNodeID`."""
    return hashlib.sha256(f"{node_id(root)}:{context.resolve()}".encode()).hexdigest()[:32]


def local_unique_id(context: Path, root: Path) -> str:
    """The `local.unique` of our graph's local sources: stable per context and state root, so a rebuild's vertices
    are the last build's, and derived from the secret shared key, so no one else's graph names the same vertex
    (the daemon merges equal vertices of builds that run at once, and one session's files then serve both)."""
    return hashlib.sha256(b"local.unique:" + shared_key(context, root).encode()).hexdigest()[:32]


def node_id(root: Path) -> str:
    """The random ID of the state root `root` (ROOT/node-id, 0600, made once; the root is its owner's alone)."""
    path = root / "node-id"
    if value := _read_id(path):
        return value
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = root / f"node-id.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, _random.token_hex(32).encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic: the first process's ID wins, the others read it
    except FileExistsError:
        if not _read_id(path):
            os.replace(tmp, path)  # a damaged one is replaced
    finally:
        tmp.unlink(missing_ok=True)
    if value := _read_id(path):
        return value
    raise OSError(f"{path}: cannot keep this state root's node ID")


def _read_id(path: Path) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            value = f.read(128).strip()
    except FileNotFoundError:
        return ""
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else ""


def solve_request(plan: SolvePlan, ref: str, session_id: str) -> Any:
    from workbench.remote.proto import control_pb2 as pb

    # Cache is always sent, if empty: buildkitd v0.20 dereferences it unchecked (a nil one panics the daemon)
    cache = pb.CacheOptions(Imports=[pb.CacheOptionsEntry(Type=c.type, Attrs=c.attrs) for c in plan.cache_imports],
                            Exports=[pb.CacheOptionsEntry(Type=c.type, Attrs=c.attrs) for c in plan.cache_exports])
    attrs = dict(plan.frontend_attrs)
    if plan.cache_imports and plan.frontend:  # a frontend solves by itself: it reads the imports from here (buildctl)
        attrs["cache-imports"] = json.dumps([{"Type": c.type, "Attrs": c.attrs} for c in plan.cache_imports])
    req = pb.SolveRequest(Ref=ref, Session=session_id, Frontend=plan.frontend, FrontendAttrs=attrs,
                          Entitlements=plan.entitlements, Cache=cache)
    if plan.definition and plan.result_metadata is None:
        req.Definition.ParseFromString(plan.definition)
    if plan.exporters:
        first = plan.exporters[0]
        req.ExporterDeprecated = first.type
        req.ExporterAttrsDeprecated.update(first.attrs)
        if not plan.legacy_exporter:
            req.Exporters.extend(pb.Exporter(Type=e.type, Attrs=e.attrs) for e in plan.exporters)
    return req


def run_solve(control: Control, plan: SolvePlan, on_status: Callable[[Any], None],
              cancel: threading.Event | None = None, shared: str = "", docker_session: bool = False,
              sent: Callable[[], None] | None = None) -> dict[str, str]:
    """Solve `plan` on the daemon, handing every StatusResponse to `on_status` (from another thread);
    the exporter response. Raises SolveFailed, SolveCanceled, or ControlError (the daemon is unreachable).
    `docker_session`: for a docker:// daemon, serve the session on a hijacked `POST /session` connection (as the
    docker CLI does) instead of the `Control.Session` stream. `sent` is called once the Solve is on its way:
    work the build can do later is done while the daemon solves."""
    import grpc

    from workbench.remote.proto import control_pb2 as pb

    ref, session_id = new_id(), new_id()
    channel = control.channel.grpc
    heard = threading.Event()  # the daemon took the job: a connection lost after this is a daemon gone away
    solve_stub = channel.unary_unary(SERVICE + "Solve", request_serializer=pb.SolveRequest.SerializeToString,
                                     response_deserializer=pb.SolveResponse.FromString)
    # The Solve goes first: the daemon starts on the graph while this process opens the session, which the
    # daemon waits for when it first needs it (as it waits for buildctl's, opened beside its Solve), and asks
    # for the Status, which the daemon replays from the job's start. The session's allow-lists are final already.
    future = solve_stub.future(solve_request(plan, ref, session_id))
    status_call: Any = None
    try:
        status_call, reader = watch_status(channel, ref, on_status, heard)
        pipe, server = open_session(control, plan, session_id, shared, docker_session)
    except BaseException:  # no session: the Solve is called off
        future.cancel()
        if status_call is not None:
            status_call.cancel()
        raise
    if plan.definition and plan.result_metadata is not None:
        threading.Thread(target=_return_definition, args=(channel, ref, plan, future), name="solve-gateway",
                         daemon=True).start()
    try:
        try:
            if sent is not None:
                sent()
            while True:
                if cancel is not None and cancel.is_set():
                    future.cancel()
                    raise SolveCanceled("canceled")
                try:
                    response = future.result(timeout=0.2)
                    break
                except grpc.FutureTimeoutError:
                    continue
        except grpc.FutureCancelledError:
            raise SolveCanceled("canceled") from None
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                raise SolveCanceled("canceled") from None
            if heard.is_set() and _connection_lost(e):
                raise ControlError(f"the daemon went away: the connection to {control.address} closed during the "
                                   f"build ({(e.details() or e.code().name).strip()})") from None
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                raise control.fault(e, "Solve") from None
            from workbench.remote.marshal_errors import rpc_error_details

            message, details = rpc_error_details(e)
            raise SolveFailed(message or e.code().name.lower(), details) from None
        except BaseException:  # Ctrl-C
            future.cancel()
            raise
    finally:
        reader.join(STATUS_GRACE)  # the final updates (errors, "context canceled") come after Solve ends
        status_call.cancel()
        reader.join(1.0)
        closer = threading.Thread(target=_close_session, args=(pipe, server), name="session-close", daemon=True)
        closer.start()
        closer.join(CLOSE_GRACE)  # a wedged session never holds up the end of a build, or a Ctrl-C
    if plan.cache_tags:  # as buildctl: the client names the exported cache in DIR/index.json
        from workbench.remote.session.content import CacheStoreError, tag_exported

        try:
            tag_exported(plan.content_stores, plan.cache_tags, response.ExporterResponse)
        except CacheStoreError as e:
            raise SolveFailed(str(e)) from None
    return dict(response.ExporterResponse)


def open_session(control: Control, plan: SolvePlan, session_id: str, shared: str, docker_session: bool = False,
                 default_name: str = "build") -> tuple[Any, Any]:
    """Our side of the build, served to the daemon: the pipe (the `Control.Session` stream, or for a docker://
    daemon with `docker_session` a hijacked `POST /session`) and the gRPC server on it, serving."""
    from workbench.remote.session.h2server import H2GrpcServer, Pipe
    from workbench.remote.session.pipe import BytesMessagePipe, dial_docker_session
    from workbench.remote.session.services import SessionServices, session_metadata

    handlers = SessionServices(dirs=plan.dirs, secrets=plan.secrets, output=plan.output, ssh=plan.ssh,
                               registry_hosts=plan.registry_hosts, content_stores=plan.content_stores).handlers()
    metadata = [("x-docker-expose-session-uuid", session_id),
                ("x-docker-expose-session-name", safe_session_name(plan.name or default_name)),
                ("x-docker-expose-session-sharedkey", shared), *session_metadata(handlers)]
    pipe: Pipe
    if docker_session and control.address.scheme == "docker":
        from workbench.remote.channel import RelayError

        try:
            pipe = dial_docker_session(control.address.path, metadata)
        except RelayError as e:
            raise ControlError(f"cannot open a session with Docker at {control.address}: {e}") from None
    else:
        pipe = BytesMessagePipe(control.channel.grpc, metadata)
    server = H2GrpcServer(pipe, handlers)
    threading.Thread(target=server.serve, name="session", daemon=True).start()
    return pipe, server


def watch_status(channel: Any, ref: str, on_status: Callable[[Any], None],
                 heard: threading.Event | None = None) -> tuple[Any, threading.Thread]:
    """The Status stream of the build `ref`, each response handed to `on_status` from a thread (`heard` set at
    the first); the call (cancel it to stop) and the thread."""
    import grpc

    from workbench.remote.proto import control_pb2 as pb

    status_call = channel.unary_stream(SERVICE + "Status", request_serializer=pb.StatusRequest.SerializeToString,
                                       response_deserializer=pb.StatusResponse.FromString)(pb.StatusRequest(Ref=ref))

    def read() -> None:
        try:
            for response in status_call:
                if heard is not None:
                    heard.set()
                on_status(response)
        except grpc.RpcError:
            pass  # canceled by us, or the daemon went away (Solve says which)

    reader = threading.Thread(target=read, name="solve-status", daemon=True)
    reader.start()
    return status_call, reader


def _close_session(pipe: Any, server: Any) -> None:
    pipe.close()
    server.close()




def _return_definition(channel: Any, ref: str, plan: SolvePlan, solve_future: Any) -> None:
    """Be the build's frontend (as BuildKit's client.Build): once the daemon knows the build, solve our
    Definition through LLBBridge (lazily: nothing runs yet) and Return its ref with `plan.result_metadata`;
    the exporters then build and export it. A failure is Returned as the build's error."""
    import grpc

    from workbench.remote.gateway import Gateway
    from workbench.remote.proto import gateway_pb2 as gw
    from workbench.remote.proto import ops_pb2

    gateway = Gateway(channel, ref)
    try:
        gateway.wait_registered(solve_future)
    except grpc.RpcError:
        return  # Control.Solve tells what went wrong
    try:
        definition = ops_pb2.Definition.FromString(plan.definition)
        res = gateway.call("Solve", gw.SolveRequest(Definition=definition, allowResultReturn=True),
                           gw.SolveResponse).result
        which = res.WhichOneof("result")
        ref_id = res.ref.id if which == "ref" else res.refDeprecated
        result = gw.Result(ref=gw.Ref(id=ref_id)) if which == "ref" else gw.Result(refDeprecated=ref_id)
        for k, v in (plan.result_metadata or {}).items():
            result.metadata[k] = v
        request = gw.ReturnRequest(result=result)
    except grpc.RpcError as e:
        from google.protobuf.any_pb2 import Any as AnyPb

        from workbench.remote.marshal_errors import rpc_error_details

        message, details = rpc_error_details(e)
        request = gw.ReturnRequest(error=gw.RPCStatus(code=e.code().value[0], message=message,
                                                      details=[AnyPb(type_url=u, value=v) for u, v in details]))
    try:
        gateway.call("Return", request, gw.ReturnResponse, timeout=30)
    except grpc.RpcError:
        pass  # the daemon went away or canceled: Control.Solve says so


_LOST = ("socket closed", "connection reset", "transport is closing", "broken pipe", "goaway",
         "connection refused", "stream removed")


def _connection_lost(error: Any) -> bool:
    """The RPC failed because the connection to the daemon went, not because the daemon answered an error."""
    import grpc

    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return True
    details = (error.details() or "").lower()
    return error.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and any(m in details for m in _LOST)
