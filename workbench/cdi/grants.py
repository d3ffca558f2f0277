"""Which requested devices a build may use, decided before anything runs (BuildKit's `ValidateEntitlements`).

For each exec op with `RUN --device` requests: with `--allow device` everything is granted and the names
stay as requested (resolved again when the step runs); otherwise aliases are rewritten to their device,
the other requests are resolved, and each resolved device must be granted by `--allow device=NAME` or be
auto-allowed (annotation or config), else the build fails with BuildKit's message. The op's device list
is replaced by what was granted, and that list, not the spec files' contents, is part of the step's
cache key (BuildKit's exec CacheMap marshals the rewritten op).

Every grant and denial is a `DeviceGrant` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workbench.cdi.entitlements import DevicesConfig
from workbench.cdi.registry import Registry
from workbench.cdi.resolve import DeviceError, find_device
from workbench.llb.ops import Device, ExecOp, Vertex
from workbench.progress.events import DeviceGrant, Event


class DeviceDenied(DeviceError):
    """Requested devices that are neither granted nor auto-allowed."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices
        if len(devices) == 1:
            super().__init__(f"device {devices[0]} is requested by the build but not allowed")
        else:
            super().__init__(f"devices {', '.join(devices)} are requested by the build but not allowed")


@dataclass(frozen=True)
class StepDevices:
    """The devices a step was granted: `requests` as the op will use them (BuildKit's rewritten CdiDevices)."""

    requests: tuple[Device, ...]
    resolve_at_run: bool = False
    """True under `--allow device`: the names are resolved only when the step runs (as BuildKit)."""

    def key_part(self) -> str:
        flags = ",".join(f"{d.name}{'' if d.required else '?'}" for d in self.requests)
        return f"cdi:{'all:' if self.resolve_at_run else ''}{flags}"


def _best_effort(registry: Registry, request: str) -> tuple[str, ...]:
    try:
        return tuple(find_device(registry, request, optional=True))
    except DeviceError:
        return ()


def check_step(v: Vertex, registry: Registry, grants: DevicesConfig | None,
               emit: Callable[[Event], None]) -> StepDevices:
    """Decide the devices of one exec vertex; raises DeviceError (DeviceDenied when not allowed)."""
    assert isinstance(v.op, ExecOp)
    requests = v.op.devices
    order = {d.name: i for i, d in reversed(list(enumerate(requests)))}
    decided: list[DeviceGrant] = []
    try:
        return _decide(v, requests, registry, grants, decided.append)
    finally:  # in the order the Dockerfile asked, whatever the outcome
        for ev in sorted(decided, key=lambda e: order.get(e.request, len(order))):
            emit(ev)


def _decide(v: Vertex, requests: tuple[Device, ...], registry: Registry, grants: DevicesConfig | None,
            emit: Callable[[DeviceGrant], None]) -> StepDevices:
    if grants is not None and grants.all:
        for d in requests:
            emit(DeviceGrant(v.digest, d.name, _best_effort(registry, d.name), True, "--allow device", d.required))
        return StepDevices(requests, resolve_at_run=True)
    allowed: list[Device] = []
    plain: list[Device] = []
    for d in requests:
        target = grants.devices.get(d.name, "") if grants is not None else ""
        if grants is not None and target:
            allowed.append(Device(target, d.required))
            emit(DeviceGrant(v.digest, d.name, _best_effort(registry, target), True, grants.describe(d.name),
                             d.required))
        else:
            plain.append(d)
    resolved: list[tuple[Device, list[str]]] = []
    for d in plain:
        try:
            found = find_device(registry, d.name, optional=not d.required)
        except DeviceError as e:
            emit(DeviceGrant(v.digest, d.name, (), False, str(e), d.required))
            raise
        if not found:
            emit(DeviceGrant(v.digest, d.name, (), False, "optional device is not registered", d.required))
        resolved.append((d, found))
    if not any(found for _, found in resolved):
        return StepDevices(tuple(allowed))
    granted: dict[str, str] = {}  # device → the grant that names it
    if grants is not None:
        for key in grants.devices:
            for r in find_device(registry, key, optional=False):
                granted.setdefault(r, grants.describe(key))
    forbidden: list[str] = []
    seen: set[str] = set()
    for d, found in resolved:
        for name in found:
            if name in seen:
                continue
            seen.add(name)
            auto = registry.auto_allow(name)
            how = granted.get(name) or (f"auto-allow ({auto})" if auto else "")
            if how:
                allowed.append(Device(name, True))
                emit(DeviceGrant(v.digest, d.name, (name,), True, how, d.required))
            else:
                forbidden.append(name)
                emit(DeviceGrant(v.digest, d.name, (name,), False,
                                 f"not auto-allowed; grant it with --allow device={name}", d.required))
    if forbidden:
        raise DeviceDenied(forbidden)
    return StepDevices(tuple(allowed))
