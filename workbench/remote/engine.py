"""`RemoteEngine`: a BuildKit daemon (buildkitd, or the one inside Docker) behind `workbench.engine.Engine`.

By default our own graph is sent: the local Dockerfile frontend parses, checks and converts as for a local build,
the graph goes as a pb.Definition (workbench.remote.marshal) with the image config for the exporters, and the
daemon's SolveStatus becomes our events under our vertex digests and names. `--frontend dockerfile.v0` instead
builds with the daemon's own Dockerfile frontend. The checks and the LLB are static and come from the local
frontend. What needs our own store (the prediction, step views and shells) is not available on a remote daemon yet.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.progress.events import BuildFinished, BuildWarning, EventBus, VertexFailed
from workbench.remote.address import Address
from workbench.request import (
    BuildFailure,
    BuildRecorder,
    BuildRequest,
    BuildResult,
    OutputSpec,
    RecorderFactory,
)

if TYPE_CHECKING:
    from workbench.prediction import Prediction
    from workbench.remote.control import Control
    from workbench.remote.graph import LocalGraph
    from workbench.remote.marshal import Marshalled
    from workbench.remote.solve import SolvePlan
    from workbench.results import ShellConfig

DOCKERFILE_FRONTEND = "dockerfile.v0"
NOT_REMOTE = "not on a remote BuildKit (yet)"


class RemoteEngine:
    """Builds on the daemon at `address`; `frontend` is the daemon-side frontend to use (only dockerfile.v0)."""

    def __init__(self, address: Address, frontend: str = DOCKERFILE_FRONTEND,
                 recorder: RecorderFactory | None = None, docker_session: bool = False) -> None:
        self.address = address
        self.frontend = frontend
        self.recorder = recorder
        self.docker_session = docker_session
        """docker:// only: serve the session on `POST /session` (as the docker CLI) rather than Control.Session."""

    @property
    def daemon(self) -> str:
        return "Docker 20.10's BuildKit" if self.address.scheme == "docker" else f"the BuildKit at {self.address}"

    # -- build ---------------------------------------------------------------------------------------------

    def build(self, request: BuildRequest, bus: EventBus) -> BuildResult:
        from workbench.progress.redact import RedactingBus, Redactor
        from workbench.progress.text import printable
        from workbench.remote.control import Control, ControlError
        from workbench.solver.session import secret_values

        redactor = Redactor(secret_values(request.session))
        bus = RedactingBus(bus, redactor)
        try:
            control = Control(self.address)  # one connection for the whole build (grpc connects on the first call)
        except (ControlError, OSError) as e:
            raise BuildFailure(f"cannot reach BuildKit at {self.address}: {e}") from None
        # connecting and asking the daemon's version (for the record, and our graph's caps) overlap the local
        # frontend's work; the record names the daemon's version once it is known
        connecting = _Connecting(self, control, describe=self.recorder is not None)
        if self.recorder is not None:
            request = replace(request, engine=self.fallback_description())
        recording = self.recorder(request, bus, redactor) if self.recorder is not None else None
        t0 = time.monotonic()
        try:
            with control:
                result = self._build(request, bus, control, recording, connecting)
        except BuildFailure as e:
            # the daemon wrote most of this text: no secret value and no terminal control reach the user's screen
            e.message = printable(redactor.text(e.message), keep="\n")
            e.args = (e.message,)
            bus.emit(BuildFinished(error=e.message, duration=time.monotonic() - t0, source=e.location, step=e.step))
            connecting.name_engine(recording)
            if recording is not None:
                recording.finish("error", time.monotonic() - t0, error=e.message, location=e.location, step=e.step)
            raise
        except BaseException as e:
            connecting.name_engine(recording)
            if recording is not None:
                recording.finish("canceled" if isinstance(e, KeyboardInterrupt) else "error", time.monotonic() - t0,
                                 error=str(e) or type(e).__name__, exception=type(e).__name__)
            raise
        result.duration = time.monotonic() - t0
        bus.emit(BuildFinished(duration=result.duration))
        if recording is not None:
            recording.finish("completed", result.duration, result=result)
        return result

    def _build(self, request: BuildRequest, bus: EventBus, control: Control,
               recording: BuildRecorder | None = None, connecting: _Connecting | None = None) -> BuildResult:
        from workbench.remote.control import ControlError
        from workbench.remote.explain import RemoteExplainer, save_remote_build
        from workbench.remote.solve import SolveCanceled, SolveFailed, run_solve, shared_key
        from workbench.remote.status import StatusFold

        graph, marshalled = None, None
        if self.frontend:
            plan = self.plan(request)
        else:  # our own graph: the local frontend converts, as for a local build
            from workbench.remote.graph import convert_request

            graph = convert_request(request, bus)
        llb = _RecordLLB(recording, graph)  # written while the daemon solves (it is read after the build)
        if connecting is not None and graph is not None:  # (the daemon's caps decide how our graph marshals)
            connecting.wait(recording)

        def sent() -> None:  # the Solve is on its way: what can wait is done while the daemon solves
            llb()
            if connecting is not None:
                connecting.wait(recording)

        try:
            if graph is not None:
                marshalled = self.marshal_graph(control, graph, request)
                plan = self.graph_plan(request, marshalled, graph.image)
            fold, explainer = StatusFold(bus.emit), None
            if graph is not None and marshalled is not None:
                explainer = RemoteExplainer(request.root, str(self.address), str(request.dockerfile.resolve()),
                                            graph.vertex, request.context, request.no_cache)
                fold = StatusFold(bus.emit, graph=our_digests(marshalled), sources=marshalled.locations,
                                  names=marshalled.names, explain=explainer.started)
            for warning in plan.warnings:
                bus.emit(BuildWarning(warning))
            try:
                response = run_solve(control, plan, fold.apply, request.cancel,
                                     shared_key(request.context, request.root), self.docker_session, sent=sent)
            finally:
                save_remote_build(request.root, request.dockerfile, str(self.address), fold, explainer)
        except ControlError as e:
            raise BuildFailure(str(e)) from None
        except SolveCanceled:
            for v in fold.running():
                bus.emit(VertexFailed(v.id, v.name, error="canceled"))
            raise BuildFailure("canceled") from None
        except SolveFailed as e:
            failed = fold.failed()
            step = failed[0].name if failed else ""
            message = cap_error(self.daemon, _error_text(str(e)))
            if graph is None:
                raise BuildFailure(message, step=step) from None
            from workbench.remote.marshal_errors import solve_error_location

            location, found, text = solve_error_location(e.details, graph.text, marshalled)
            if location is None and failed and failed[0].source is not None:
                location = failed[0].source
            raise BuildFailure(message, location, found or step, text) from None
        finally:
            llb()  # (when the build ended before its Solve was sent)
        steps_run = sum(1 for v in fold.vertices.values() if v.state == "completed")
        if self.address.scheme == "docker":
            from workbench.remote.dockerpush import PushError, push_image

            for name in _docker_pushes(request.outputs):
                try:
                    push_image(self.address.path, name, bus.emit)
                except PushError as e:
                    raise BuildFailure(str(e), step=f"pushing {name}") from None
        return BuildResult(response.get("containerimage.digest"), graph.image if graph else {}, 0.0, steps_run,
                           dict(response))

    def marshal_graph(self, control: Control, graph: LocalGraph, request: BuildRequest) -> Marshalled:
        """`graph` as a Definition for this daemon's caps; one located line for what it cannot express."""
        from workbench.remote.marshal import MarshalError, marshal
        from workbench.remote.marshal_caps import V08_CAPS
        from workbench.remote.solve import local_unique_id

        docker = self.address.scheme == "docker"
        caps = V08_CAPS if docker or not _has_merge(control) else None
        try:
            # Docker's test daemon has no bridge: steps run in the host's network (entitled in _plan)
            return marshal(graph.vertex, graph.text, caps=caps, network_host=docker, shared_key_hint="context",
                           unique_id=local_unique_id(request.context, request.root), no_cache=request.no_cache)
        except MarshalError as e:
            raise BuildFailure(str(e), e.location, dockerfile_text=graph.text) from None

    def plan(self, request: BuildRequest) -> SolvePlan:
        """The Solve for `request` with the daemon's Dockerfile frontend; BuildFailure (one line) for what this
        daemon cannot do."""
        from workbench.remote.solve import SolvePlan

        if self.frontend != DOCKERFILE_FRONTEND:
            raise BuildFailure(f"--frontend {self.frontend}: the daemon's frontend can only be "
                               f"{DOCKERFILE_FRONTEND}; leave --frontend out to send workbench's own build graph")
        dockerfile = request.dockerfile
        if not dockerfile.is_file():
            raise BuildFailure(f"the Dockerfile {dockerfile} does not exist")
        if not request.context.is_dir():
            raise BuildFailure(f"build context {request.context} is not a directory")
        attrs = {"filename": dockerfile.name}
        if request.target:
            attrs["target"] = request.target
        for k, v in request.build_args.items():
            attrs[f"build-arg:{k}"] = v
        if request.no_cache or request.no_cache_filter:
            attrs["no-cache"] = "" if request.no_cache else ",".join(request.no_cache_filter)
        plan = self._plan(request, SolvePlan(frontend=DOCKERFILE_FRONTEND, frontend_attrs=attrs,
                                             dirs={"context": request.context, "dockerfile": dockerfile}))
        if self.address.scheme == "docker":  # the test daemon has no bridge: steps run on the host's network
            plan.frontend_attrs["force-network-mode"] = "host"
        return plan

    def graph_plan(self, request: BuildRequest, marshalled: Marshalled, image: dict[str, Any]) -> SolvePlan:
        """The Solve of our own graph (`marshalled`), its image config handed to the image exporters."""
        from workbench.remote.session.auth import allowed_hosts
        from workbench.remote.session.secrets import graph_secrets
        from workbench.remote.solve import Exporter, SolvePlan

        plan = self._plan(request, SolvePlan(frontend="", definition=marshalled.data,
                                             dirs={"context": request.context, "dockerfile": request.dockerfile}))
        plan.secrets = graph_secrets(plan.secrets, marshalled.definition)  # only the ids the graph mounts
        # Auth answers only for the registries our graph has the daemon contact (the daemon's own frontend may
        # pull any image: with it, Auth answers for any host)
        plan.registry_hosts = allowed_hosts(_registry_refs(plan, marshalled.definition))
        config = json.dumps(image, separators=(",", ":"))
        if self.address.scheme == "docker" and any(e.type == "moby" for e in plan.exporters):
            # Docker 20.10's moby exporter takes the config only from the result's metadata (the gateway's Return)
            plan.result_metadata = {CONFIG_KEY: config.encode()}
        else:
            plan.exporters = [Exporter(e.type, {**e.attrs, CONFIG_KEY: config}) if e.type in IMAGE_EXPORTERS else e
                              for e in plan.exporters]
        return plan

    def _plan(self, request: BuildRequest, plan: SolvePlan) -> SolvePlan:
        """`plan` completed with what both kinds of Solve share: ssh, caches, entitlements, exporters, secrets."""
        plan.ssh = self._ssh(request.session.ssh)
        plan.cache_imports = [e for spec in request.cache_from if (e := self._cache(spec, plan)) is not None]
        plan.cache_exports = [self._cache(spec, plan) for spec in request.cache_to]
        docker = self.address.scheme == "docker"
        entitlements = sorted(request.session.entitlements)
        if docker and (device := next((e for e in entitlements if e.split("=", 1)[0] == "device"), None)):
            raise BuildFailure(f"--allow {device}: {self.daemon} has no devices entitlement (CDI devices need "
                               f"BuildKit v0.20 or later: build with --addr on a buildkitd)")
        if docker:  # the test daemon has no bridge: steps run on the host's network, granted by default
            entitlements = sorted({*entitlements, "network.host"})
        plan.exporters, plan.output = self._exporters(request.outputs)
        plan.legacy_exporter = docker
        plan.entitlements = entitlements
        plan.secrets = request.session.secrets
        plan.name = request.context.name
        return plan

    def _ssh(self, agents: dict[str, tuple[str, ...]]) -> dict[str, str]:
        """`--ssh` ids with the agent socket each forwards; key files are refused (the session forwards an agent)."""
        import stat

        out = {}
        for sid, paths in sorted(agents.items()):
            try:
                is_socket = len(paths) == 1 and stat.S_ISSOCK(Path(paths[0]).stat().st_mode)
            except OSError:
                is_socket = False
            if not is_socket:
                raise BuildFailure(f"--ssh {sid}={','.join(paths)}: {self.daemon} is lent an ssh agent, not key "
                                   f"files; load the keys into ssh-agent and pass --ssh {sid}=$SSH_AUTH_SOCK")
            out[sid] = paths[0]
        return out

    def _cache(self, spec: Any, plan: SolvePlan) -> Any:
        """One `--cache-to` / `--cache-from` as the daemon's CacheOptionsEntry (None: a local cache with nothing
        to import, said in `plan.warnings`); a `type=local` one served by the session; what the daemon cannot
        do, in one line."""
        from workbench.remote.solve import Exporter

        flag = "--cache-to" if spec.export else "--cache-from"
        docker = self.address.scheme == "docker"
        supported: tuple[str, ...]
        if docker:
            supported = ("inline",) if spec.export else ("registry", "local")
        else:
            supported = ("registry", "inline", "gha", "local") if spec.export else ("registry", "gha", "local")
        if spec.type not in supported:
            raise BuildFailure(f"{flag} type={spec.type} is not supported by {self.daemon} (it supports "
                               f"type={', type='.join(supported)})")
        if spec.type == "local":
            return _local_cache(spec, plan)
        return Exporter(spec.type, dict(spec.attrs))

    def fallback_description(self) -> str:
        """The engine as `describe` names it when the daemon does not say its version."""
        return f"docker at {self.address}" if self.address.scheme == "docker" else f"buildkit at {self.address}"

    def describe(self, control: Control | None = None) -> str:
        """The engine, as the build's history record names it: the daemon, its version when it tells, its address
        (asked on `control`, the build's connection, when given)."""
        if self.address.scheme == "docker":
            from workbench.remote.channel import docker_version

            try:
                version = str(docker_version(self.address.path, timeout=5).get("Version", ""))
            except (OSError, ValueError):
                return self.fallback_description()
            bundled = " (buildkit v0.8)" if version.startswith("20.10.") else ""
            return f"docker {version}{bundled} at {self.address}"
        from workbench.remote.control import Control, ControlError

        try:
            if control is not None:
                info = control.info()
            else:
                with Control(self.address, timeout=5) as own:
                    info = own.info()
        except ControlError:
            return self.fallback_description()
        return f"buildkit {info.version.version} at {self.address}" if info.version else self.fallback_description()

    def _exporters(self, outputs: list[OutputSpec]) -> tuple[list[Any], Any]:
        """The daemon's exporters for `outputs`, the one written through the session (FileSend) first, since
        the session serves one; and that output (None if none)."""
        from workbench.remote.session.filesend import LocalOutput, TarOutput
        from workbench.remote.solve import Exporter

        docker = self.address.scheme == "docker"
        supported = ("image", "local", "tar") if docker else ("image", "oci", "docker", "tar", "local")
        files = [o for o in outputs if o.type != "image"]
        for out in outputs:
            if out.type not in supported:
                raise BuildFailure(f"--output type={out.type} is not supported by {self.daemon} "
                                   f"(it supports type={', type='.join(supported)})")
        if len(files) > 1 or (docker and len(outputs) > 1):
            raise BuildFailure(f"{self.daemon} takes one --output " + ("at a time" if docker else "written here "
                               "(local, tar, oci or docker) at a time"))
        exporters, file_output = [], None
        for out in files:
            dest = out.dest
            # devices=true: device nodes the daemon sends are made in DEST (refused otherwise)
            file_output = (LocalOutput(Path(dest), devices=out.attrs.get("devices") == "true") if out.type == "local"
                           else TarOutput(dest if dest == "-" else Path(dest), f"--output type={out.type}"))
            exporters.append(Exporter(out.type, {k: v for k, v in out.attrs.items() if k not in ("dest", "devices")}))
        for out in outputs:
            if out.type != "image":
                continue
            if not docker:
                attrs = {k: v for k, v in out.attrs.items() if k in IMAGE_ATTRS}
                if attrs.get("push") == "true" and _all_local(attrs.get("name", "")):
                    attrs.setdefault("registry.insecure", "true")  # a registry on this machine speaks plain HTTP
                exporters.append(Exporter("image", attrs))
            else:  # pushed after the build, through the Docker API (_docker_pushes)
                exporters.append(Exporter("moby", {"name": out.attrs["name"]}))
        return exporters, file_output

    # -- static: the local frontend -----------------------------------------------------------------------

    def check(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None, root: Path,
              fmt: str = "text") -> tuple[str, str, bool]:
        from workbench.inspect import check_text

        return check_text(context, dockerfile, build_args, target, root, fmt)

    def llb(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None,
            root: Path) -> list[str]:
        from workbench.inspect import llb_lines

        return llb_lines(context, dockerfile, build_args, target, root)

    # -- what needs our own store -------------------------------------------------------------------------

    def predict(self, request: BuildRequest) -> Prediction:
        from workbench.prediction import PredictionError

        raise PredictionError(f"predicting cache misses is {NOT_REMOTE}: the daemon at {self.address} keeps the cache")

    def step_view(self, root: Path, cache_key: str) -> AbstractContextManager[Path]:
        from workbench.results import ViewError

        raise ViewError(f"viewing a step's files is {NOT_REMOTE} ({self.address})")

    def chain_view(self, root: Path, chain: list[str]) -> AbstractContextManager[Path]:
        from workbench.results import ViewError

        raise ViewError(f"viewing a step's input is {NOT_REMOTE} ({self.address})")

    def step_chain(self, root: Path, cache_key: str) -> list[str] | None:
        return None  # no result of ours is kept for a remote step

    def step_shell(self, root: Path, cache_key: str, argv: list[str], config: ShellConfig,
                   on_start: Callable[[Callable[[], None]], None]) -> int:
        from workbench.results import ViewError

        raise ViewError(f"a shell in a step's result is {NOT_REMOTE} ({self.address})")


class _RecordLLB:
    """Writes our converted graph into the build's record, once, when called (without either, nothing)."""

    def __init__(self, recording: BuildRecorder | None, graph: LocalGraph | None) -> None:
        self._recording, self._graph = recording, graph

    def __call__(self) -> None:
        recording, graph, self._recording = self._recording, self._graph, None
        if recording is not None and graph is not None:
            recording.record_llb(graph.vertex, graph.text)


class _Connecting:
    """In a thread, while the build starts: the connection made and the daemon's version asked, for the record
    (`describe`) and our graph's caps. Never joined when the build fails before it needs them (closing the
    channel ends the call)."""

    def __init__(self, engine: RemoteEngine, control: Control, describe: bool) -> None:
        self.description = engine.fallback_description()
        self._engine, self._control, self._describe = engine, control, describe
        self._thread = threading.Thread(target=self._run, name="remote-connect", daemon=True)
        if describe or (not engine.frontend and engine.address.scheme != "docker"):
            self._thread.start()

    def _run(self) -> None:
        try:
            if self._describe:
                self.description = self._engine.describe(self._control)
            else:
                self._control.info()
        except Exception:  # the build's own calls say what is wrong with the daemon
            pass

    def wait(self, recording: BuildRecorder | None) -> None:
        """Waits for the answer; names the engine in the build's record."""
        if self._thread.ident is not None:
            self._thread.join()
        self.name_engine(recording)

    def name_engine(self, recording: BuildRecorder | None) -> None:
        """Names the engine in the build's record (a recorder that keeps one), once, if the answer has come."""
        if not self._describe or self._thread.is_alive():
            return
        self._describe = False
        if (set_engine := getattr(recording, "set_engine", None)) is not None:
            set_engine(self.description)


CONFIG_KEY = "containerimage.config"  # BuildKit's exptypes.ExporterImageConfigKey
IMAGE_EXPORTERS = ("image", "oci", "docker")  # they take a config among their attrs (into their metadata)
IMAGE_ATTRS = ("name", "push", "push-by-digest", "registry.insecure", "compression", "oci-mediatypes", "unpack")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _local_cache(spec: Any, plan: SolvePlan) -> Any:
    """A `type=local` cache as buildctl sends it: DIR (absolute) served as the content store "local:DIR"; an
    import names the digest index.json tags (`tag=`, "latest"), or is left out with a warning when none does."""
    from workbench.remote.session.content import CacheStoreError, LocalCacheStore
    from workbench.remote.solve import Exporter

    flag = "--cache-to" if spec.export else "--cache-from"
    attrs = dict(spec.attrs)
    key = "dest" if spec.export else "src"
    directory = Path(attrs[key]).absolute()
    attrs[key] = str(directory)
    store = LocalCacheStore(directory, writable=spec.export)
    known = plan.content_stores.get(store.store_id)
    tag = attrs.get("tag") or "latest"
    try:
        if spec.export:
            store.create(f"{flag} type=local,dest={directory}")
            plan.cache_tags[store.store_id] = tag
        elif not attrs.get("digest"):
            digest = store.tagged(tag)
            if digest is None:
                plan.warnings.append(f"{flag} type=local,src={directory}: no cache tagged {tag} there (no "
                                     f"index.json naming it): nothing imported")
                return None
            attrs["digest"] = digest
    except CacheStoreError as e:
        raise BuildFailure(str(e)) from None
    if known is None or (store.writable and not known.writable):
        plan.content_stores[store.store_id] = store  # one store per DIR, writable if any --cache-to names it
    return Exporter("local", attrs)


def _registry_refs(plan: SolvePlan, definition: Any) -> list[str]:
    """The image references a Solve of our own graph (`definition`, a pb.Definition) has the daemon contact a
    registry for: its images, its registry caches, the images it pushes."""
    from workbench.remote.proto import ops_pb2

    refs = [c.attrs.get("ref", "") for c in (*plan.cache_imports, *plan.cache_exports) if c.type == "registry"]
    for e in plan.exporters:
        if e.type == "image" and e.attrs.get("push") == "true":
            refs += [n.strip() for n in e.attrs.get("name", "").split(",") if n.strip()]
    for raw in getattr(definition, "def"):
        op = ops_pb2.Op.FromString(raw)
        if op.WhichOneof("op") == "source" and op.source.identifier.startswith("docker-image://"):
            refs.append(op.source.identifier.removeprefix("docker-image://"))
    return refs


def our_digests(marshalled: Marshalled | None) -> dict[str, str]:
    """op digest → our vertex digest (the first of ours that marshals to it)."""
    out: dict[str, str] = {}
    for ours, op in (marshalled.op_digests.items() if marshalled else ()):
        out.setdefault(op, ours)
    return out


def _has_merge(control: Control) -> bool:
    """Whether the daemon has MergeOp (BuildKit v0.10+). One without `Info` is v0.8; one whose version does
    not parse (a development build says v0.0.0+unknown) is taken for a current one."""
    from workbench.remote.control import ControlError

    try:
        info = control.info()
    except ControlError:
        return False
    if not info.has_info:
        return False
    m = re.match(r"v?(\d+)\.(\d+)", info.version.version if info.version else "")
    return m is None or (int(m[1]), int(m[2])) in ((0, 0),) or (int(m[1]), int(m[2])) >= (0, 10)


def _all_local(names: str) -> bool:
    hosts = [n.split("/", 1)[0].rsplit(":", 1)[0] for n in names.split(",") if "/" in n]
    return bool(hosts) and all(h in LOCAL_HOSTS for h in hosts)


def _docker_pushes(outputs: list[OutputSpec]) -> list[str]:
    """The image names Docker must push after the build (its BuildKit stores, and never pushes)."""
    return [n.strip() for o in outputs if o.type == "image" and o.attrs.get("push") == "true"
            for n in o.attrs.get("name", "").split(",") if n.strip()]


_CAP_ERROR = re.compile(r"(?:requested (?:\w+ )?feature (?P<id>\S+)[^,:]*?(?P<why> is not supported by build server"
                        r"(?: \(added in [^)]*\))?| has been disabled on the build server(?:: [^\n]*)?)"
                        r"|unknown API capability (?P<unknown>\S+))")


def cap_error(daemon: str, message: str) -> str:
    """A daemon's capability error (BuildKit's apicaps.CapError, wherever it sits in the message) as one line
    naming the daemon and the capability; any other message unchanged."""
    m = _CAP_ERROR.search(message)
    if m is None:
        return message
    if m["unknown"]:
        return f"{daemon} does not know the capability {m['unknown']} this build needs; use a newer BuildKit"
    why = re.sub(r" \(added in ([^)]*)\)", r", added in \1", m["why"].strip())
    why = why.replace("is not supported by build server", "not supported").replace(
        "has been disabled on the build server", "disabled there")
    return f"{daemon} lacks the capability {m['id']} this build needs ({why}); use a newer BuildKit"


def _error_text(details: str) -> str:
    """The daemon's error, less the gRPC wrapping v0.8 adds ("rpc error: code = Unknown desc = ...")."""
    marker = "desc = "
    while details.startswith("rpc error:") and marker in details:
        details = details.split(marker, 1)[1]
    return details
