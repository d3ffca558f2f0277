"""Device requests to concrete devices, as BuildKit v0.20's `cdidevices.Manager.FindDevices`.

`vendor.com/class` is the first device of the kind in sorted order, `vendor.com/class=*` all of them,
`vendor.com/class=name` that device or, when no device has that name, every device of the kind whose
`org.mobyproject.buildkit.device.class` annotation is `name`.
"""

from __future__ import annotations

from workbench.cdi.names import class_error, parse_qualifier, vendor_error
from workbench.cdi.registry import ANNOTATION_CLASS, Registry
from workbench.llb.ops import Vertex


class DeviceError(ValueError):
    """A device request that cannot be met; the message is BuildKit's. `vertex`: the step that asked."""

    vertex: Vertex | None = None


def find_device(registry: Registry, request: str, optional: bool) -> list[str]:
    """The devices `request` names; [] for a missing optional one; raises DeviceError otherwise."""
    kind, _, name = request.partition("=")
    vendor, cls = parse_qualifier(kind)
    if not vendor:
        raise DeviceError(f'invalid device "{request}"')
    problem = vendor_error(vendor) or class_error(cls)
    if problem:
        raise DeviceError(f'invalid device "{request}": {problem}')
    every = registry.list_devices()
    of_kind = [d for d in every if d.startswith(kind + "=")]
    if name == "":
        out = of_kind[:1]
    elif name == "*":
        out = of_kind
    elif request in every:
        out = [request]
    else:
        out = []
        for d in of_kind:
            dev = registry.get(d)
            if dev is not None and dev.annotations.get(ANNOTATION_CLASS) == name:
                out.append(d)
    if not out and not optional:
        raise DeviceError(f'required device "{request}" is not registered')
    return out


def find_devices(registry: Registry, requests: list[tuple[str, bool]]) -> list[str]:
    """Every device the (name, optional) requests resolve to, each once, in order."""
    out: list[str] = []
    for request, optional in requests:
        out += find_device(registry, request, optional)
    return list(dict.fromkeys(out))
