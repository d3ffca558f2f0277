"""Typed calls on BuildKit's Control service (`moby.buildkit.v1.Control`), for buildkitd and Docker's BuildKit.

Every gRPC failure becomes a `ControlError` whose message is one line naming the address and what to do.
Docker 20.10 embeds BuildKit v0.8, which has no `Info`: `info()` then says so and takes what `ListWorkers` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from workbench.remote.address import Address
from workbench.remote.channel import RemoteChannel

if TYPE_CHECKING:
    import grpc

SERVICE = "/moby.buildkit.v1.Control/"
T = TypeVar("T")


class ControlError(Exception):
    """A call on the daemon failed; str() is one line for the user."""


@dataclass(frozen=True)
class BuildkitVersion:
    package: str
    version: str
    revision: str = ""


@dataclass(frozen=True)
class GCPolicy:
    all: bool = False
    filters: tuple[str, ...] = ()
    keep_duration_s: float = 0.0
    reserved_space: int = 0
    max_used_space: int = 0  # 0: not set (v0.8 has no such field)
    min_free_space: int = 0


@dataclass(frozen=True)
class CDIDevice:
    name: str
    auto_allow: bool = False
    on_demand: bool = False
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Worker:
    id: str
    platforms: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    gc_policies: tuple[GCPolicy, ...] = ()
    cdi_devices: tuple[CDIDevice, ...] = ()
    version: BuildkitVersion | None = None  # v0.20 reports it per worker; v0.8 does not


@dataclass(frozen=True)
class DaemonInfo:
    version: BuildkitVersion | None  # None: a v0.8-era daemon that tells no version (Docker 20.10)
    has_info: bool  # the daemon answers Control.Info (BuildKit v0.9 and later)


@dataclass(frozen=True)
class UsageRecord:
    id: str
    size: int
    mutable: bool = False
    in_use: bool = False
    shared: bool = False
    record_type: str = ""
    description: str = ""
    usage_count: int = 0
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    parents: tuple[str, ...] = ()


def platform_text(p: Any) -> str:
    """`pb.Platform` as `os/arch[/variant]`."""
    return "/".join(x for x in (p.OS, p.Architecture, p.Variant) if x)


class Control:
    """The Control service of the daemon at `address`; a context manager that closes the channel."""

    def __init__(self, address: Address, timeout: float = 20.0) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = RemoteChannel(address)
        self._info: DaemonInfo | None = None

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # -- the calls -------------------------------------------------------------------------------------------

    def info(self) -> DaemonInfo:
        """The daemon's BuildKit version; for a daemon without `Info` (v0.8), what its workers say, if anything.
        Asked once per connection (a build names the engine and picks the caps from it)."""
        if self._info is None:
            self._info = self._ask_info()
        return self._info

    def _ask_info(self) -> DaemonInfo:
        import grpc

        from workbench.remote.proto import control_pb2 as pb

        try:
            answer = self._unary("Info", pb.InfoRequest(), pb.InfoResponse)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise self.fault(e, "Info") from None
            versions = [w.version for w in self.workers() if w.version is not None]
            return DaemonInfo(versions[0] if versions else None, has_info=False)
        v = answer.buildkitVersion
        return DaemonInfo(BuildkitVersion(v.package, v.version, v.revision) if v.version else None, has_info=True)

    def workers(self) -> list[Worker]:
        from workbench.remote.proto import control_pb2 as pb

        answer = self._call("ListWorkers", pb.ListWorkersRequest(), pb.ListWorkersResponse)
        return [_worker(r) for r in answer.record]

    def disk_usage(self, filters: Iterable[str] = ()) -> list[UsageRecord]:
        from workbench.remote.proto import control_pb2 as pb

        answer = self._call("DiskUsage", pb.DiskUsageRequest(filter=list(filters)), pb.DiskUsageResponse)
        return [_usage(r) for r in answer.record]

    def prune(self, *, all: bool = False, keep_duration_s: float = 0, reserved_space: int = 0,
              filters: Iterable[str] = ()) -> list[UsageRecord]:
        """Remove build cache; the records removed. `reserved_space` is v0.8's keepBytes (the same field)."""
        from workbench.remote.proto import control_pb2 as pb

        request = pb.PruneRequest(filter=list(filters), all=all, keepDuration=int(keep_duration_s * 1e9),
                                  reservedSpace=reserved_space)
        return [_usage(r) for r in self._stream("Prune", request, pb.UsageRecord)]

    # solve() and status() go here: Solve is `_call`, Status is `_stream` (both keyed by the same Ref).

    # -- plumbing --------------------------------------------------------------------------------------------

    def _unary(self, method: str, request: Any, response_type: type[T], **kw: Any) -> T:
        """The call, letting grpc.RpcError through (for callers that read its code)."""
        stub: Callable[..., T] = self.channel.grpc.unary_unary(
            SERVICE + method, request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString)  # type: ignore[attr-defined]
        return stub(request, timeout=kw.pop("timeout", self.timeout), **kw)

    def _call(self, method: str, request: Any, response_type: type[T], **kw: Any) -> T:
        import grpc

        try:
            return self._unary(method, request, response_type, **kw)
        except grpc.RpcError as e:
            raise self.fault(e, method) from None

    def _stream(self, method: str, request: Any, response_type: type[T], **kw: Any) -> Iterator[T]:
        import grpc

        stub = self.channel.grpc.unary_stream(
            SERVICE + method, request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString)  # type: ignore[attr-defined]
        try:
            yield from stub(request, timeout=kw.pop("timeout", self.timeout), **kw)
        except grpc.RpcError as e:
            raise self.fault(e, method) from None

    def fault(self, error: grpc.RpcError, method: str) -> ControlError:
        """One line for a failed call: where, what went wrong, what to do."""
        return ControlError(describe_fault(self.address, error, method, self.timeout,
                                           self.channel.relay.error if self.channel.relay else None))


def describe_fault(address: Address, error: Any, method: str, timeout: float, relay_error: str | None) -> str:
    import grpc

    code, details = error.code(), error.details() or ""
    where = f"BuildKit at {address} ({address.source})"
    if code == grpc.StatusCode.UNAVAILABLE:
        if address.scheme == "docker" and relay_error:
            return f"cannot reach Docker at {address}: {relay_error}; is dockerd running, and may you use its socket?"
        if "Permission denied" in details:
            return (f"cannot reach {where}: permission denied on {address.path or address.host}; run as a user "
                    f"allowed on that socket (root, or its group)")
        if "handshake" in details.lower() or "SSL" in details:
            return (f"TLS with {where} failed ({_last_part(details)}); check --tlscacert, --tlscert/--tlskey and "
                    f"--tlsservername against the daemon's certificate")
        if "No such file" in details:
            return (f"cannot reach {where}: {address.path} does not exist; start buildkitd there, or point --addr "
                    f"(or BUILDKIT_HOST) at a running daemon")
        if "refused" in details.lower():
            return (f"cannot reach {where}: connection refused; start buildkitd there, or point --addr "
                    f"(or BUILDKIT_HOST) at a running daemon")
        return f"cannot reach {where}: {_last_part(details)}; is a BuildKit daemon listening there?"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{where} did not answer {method} within {timeout:g}s; is it a BuildKit daemon, and is it busy?"
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return f"{where} refused {method}: {details}; check the client certificate (--tlscert/--tlskey)"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{where} does not implement {method} ({details}); the daemon is too old for this command"
    return f"{where}: {method} failed: {code.name.lower()}: {details}"


def _last_part(details: str) -> str:
    """grpc's "failed to connect to all addresses; last error: UNKNOWN: ipv4:…: Reason" → "Reason"."""
    return details.rsplit(": ", 1)[-1].strip() or details


def _worker(r: Any) -> Worker:
    v = r.BuildkitVersion
    return Worker(
        id=r.ID, platforms=tuple(platform_text(p) for p in r.platforms), labels=dict(sorted(r.Labels.items())),
        gc_policies=tuple(GCPolicy(all=g.all, filters=tuple(g.filters), keep_duration_s=g.keepDuration / 1e9,
                                   reserved_space=g.reservedSpace, max_used_space=g.maxUsedSpace,
                                   min_free_space=g.minFreeSpace) for g in r.GCPolicy),
        cdi_devices=tuple(CDIDevice(d.Name, d.AutoAllow, d.OnDemand, dict(sorted(d.Annotations.items())))
                          for d in r.CDIDevices),
        version=BuildkitVersion(v.package, v.version, v.revision) if v.version else None)


def _usage(r: Any) -> UsageRecord:
    return UsageRecord(id=r.ID, size=r.Size, mutable=r.Mutable, in_use=r.InUse, shared=r.Shared,
                       record_type=r.RecordType, description=r.Description, usage_count=r.UsageCount,
                       created_at=_time(r.CreatedAt) if r.HasField("CreatedAt") else None,
                       last_used_at=_time(r.LastUsedAt) if r.HasField("LastUsedAt") else None,
                       parents=tuple(r.Parents) or ((r.Parent,) if r.Parent else ()))


def _time(ts: Any) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)
