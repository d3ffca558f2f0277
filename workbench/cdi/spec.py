"""CDI spec files (JSON or YAML, cdiVersion 0.3.0 to 0.8.0 and 1.0.0): parsed, validated, typed.

Validation follows the CDI library BuildKit v0.20 vendors (`tags.cncf.io/container-device-interface`
v0.8.0): strict keys, vendor/class/device name rules, edit checks and the minimum spec version a
feature needs. Every error names the file and the field (`devices[0].containerEdits.env[1]`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.cdi.names import class_error, device_name_error, parse_qualifier, vendor_error

VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0")
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
_SPEC_KEYS = {"cdiVersion", "kind", "annotations", "devices", "containerEdits"}
_DEVICE_KEYS = {"name", "annotations", "containerEdits"}
_EDIT_KEYS = {"env", "deviceNodes", "mounts", "hooks", "intelRdt", "additionalGids"}
_NODE_KEYS = {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"}
_MOUNT_KEYS = {"hostPath", "containerPath", "options", "type"}
_HOOK_KEYS = {"hookName", "path", "args", "env", "timeout"}
_RDT_KEYS = {"closID", "l3CacheSchema", "memBwSchema", "enableCMT", "enableMBM", "schemata", "enableMonitoring"}
_UINT32 = (1 << 32) - 1


class SpecError(ValueError):
    """A CDI spec file that cannot be used: which file, which field, what is wrong."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path, self.field, self.problem = path, field, problem
        where = f"{field}: " if field else ""
        super().__init__(f"CDI spec {path}: {where}{problem}")


@dataclass(frozen=True)
class DeviceNode:
    path: str
    host_path: str = ""
    type: str = ""
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str = ""


@dataclass(frozen=True)
class Hook:
    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True)
class ContainerEdits:
    """What injecting a device changes in the container's OCI spec."""

    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()
    intel_rdt: dict[str, Any] | None = None
    additional_gids: tuple[int, ...] = ()

    def empty(self) -> bool:
        return not (self.env or self.device_nodes or self.mounts or self.hooks or self.intel_rdt
                    or self.additional_gids)


@dataclass(frozen=True)
class Device:
    name: str
    annotations: dict[str, str] = field(default_factory=dict)
    edits: ContainerEdits = field(default_factory=ContainerEdits)


@dataclass(frozen=True)
class Spec:
    """One spec file: a kind (`vendor/class`), its devices and the edits every device of it shares."""

    path: str
    version: str
    kind: str
    annotations: dict[str, str] = field(default_factory=dict)
    edits: ContainerEdits = field(default_factory=ContainerEdits)
    devices: tuple[Device, ...] = ()
    priority: int = 0
    """The index of the spec dir it came from: a later dir wins a conflict over a device name."""


def load_spec(path: Path, priority: int = 0) -> Spec:
    """Read and validate the spec file at `path`; raises SpecError."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), "", f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_spec(text, str(path), priority)


def parse_spec(text: str, path: str, priority: int = 0) -> Spec:
    """Parse spec text (JSON for `*.json`, else YAML) and validate it; raises SpecError."""
    if not text.strip():
        raise SpecError(path, "", "no spec data (the file is empty)")
    try:
        if path.endswith(".json"):
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except ValueError as e:  # json.JSONDecodeError
        raise SpecError(path, "", f"not valid JSON: {e}") from None
    except Exception as e:  # yaml.YAMLError (imported lazily)
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError(path, "", f"not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if raw is None:
        raise SpecError(path, "", "no spec data")
    return _Parser(path).spec(raw, priority)


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError(self.path, where, problem)

    def obj(self, value: Any, where: str, keys: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        for k in value:
            if k not in keys:
                raise self.fail(f"{where}.{k}" if where else str(k), "unknown field")
        return value

    def string(self, value: Any, where: str, required: bool = False) -> str:
        if value is None:
            if required:
                raise self.fail(where, "required")
            return ""
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        if required and not value:
            raise self.fail(where, "must not be empty")
        return value

    def integer(self, value: Any, where: str, low: int, high: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise self.fail(where, f"{value} is out of range ({low}..{high})")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return tuple(self.string(v, f"{where}[{i}]", required=False) for i, v in enumerate(value))

    def annotations(self, value: Any, where: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise self.fail(where, f"invalid annotation key {k!r}")
            text = _scalar_string(v)
            if text is None:
                raise self.fail(f"{where}.{k}", f"expected a string, got {_kind(v)}")
            out[k] = text
        return out

    def env(self, value: Any, where: str) -> tuple[str, ...]:
        env = self.strings(value, where)
        for i, e in enumerate(env):
            if e.find("=") <= 0:
                raise self.fail(f"{where}[{i}]", f"invalid environment variable {e!r} (expected NAME=VALUE)")
        return env

    def edits(self, value: Any, where: str) -> ContainerEdits:
        if value is None:
            return ContainerEdits()
        raw = self.obj(value, where, _EDIT_KEYS)
        nodes = []
        for i, n in enumerate(_list(self, raw.get("deviceNodes"), f"{where}.deviceNodes")):
            nodes.append(self.node(n, f"{where}.deviceNodes[{i}]"))
        mounts = []
        for i, m in enumerate(_list(self, raw.get("mounts"), f"{where}.mounts")):
            w = f"{where}.mounts[{i}]"
            m = self.obj(m, w, _MOUNT_KEYS)
            mounts.append(Mount(self.string(m.get("hostPath"), f"{w}.hostPath", True),
                                self.string(m.get("containerPath"), f"{w}.containerPath", True),
                                self.strings(m.get("options"), f"{w}.options"),
                                self.string(m.get("type"), f"{w}.type")))
        hooks = []
        for i, h in enumerate(_list(self, raw.get("hooks"), f"{where}.hooks")):
            w = f"{where}.hooks[{i}]"
            h = self.obj(h, w, _HOOK_KEYS)
            name = self.string(h.get("hookName"), f"{w}.hookName", True)
            if name not in HOOK_NAMES:
                raise self.fail(f"{w}.hookName", f"invalid hook name {name!r} (one of {', '.join(HOOK_NAMES)})")
            hooks.append(Hook(name, self.string(h.get("path"), f"{w}.path", True),
                              self.strings(h.get("args"), f"{w}.args"),
                              self.env(h.get("env"), f"{w}.env"),
                              self.integer(h.get("timeout"), f"{w}.timeout", 0, _UINT32)))
        rdt = raw.get("intelRdt")
        if rdt is not None:
            rdt = dict(self.obj(rdt, f"{where}.intelRdt", _RDT_KEYS))
            clos = rdt.get("closID", "")
            if clos != "/" and (not isinstance(clos, str) or len(clos) >= 4096 or clos in (".", "..")
                                or "/" in clos or "\n" in clos):
                raise self.fail(f"{where}.intelRdt.closID", f"invalid ClosID {clos!r}")
        gids = []
        for i, g in enumerate(_list(self, raw.get("additionalGids"), f"{where}.additionalGids")):
            gids.append(self.integer(g, f"{where}.additionalGids[{i}]", 0, _UINT32) or 0)
        return ContainerEdits(self.env(raw.get("env"), f"{where}.env"), tuple(nodes), tuple(mounts), tuple(hooks),
                              rdt, tuple(gids))

    def node(self, value: Any, where: str) -> DeviceNode:
        n = self.obj(value, where, _NODE_KEYS)
        path = self.string(n.get("path"), f"{where}.path", True)
        typ = self.string(n.get("type"), f"{where}.type")
        if typ not in ("", "b", "c", "u", "p"):
            raise self.fail(f"{where}.type", f"device {path!r}: invalid type {typ!r} (b, c, u or p)")
        perms = self.string(n.get("permissions"), f"{where}.permissions")
        if perms.strip("rwm"):
            raise self.fail(f"{where}.permissions", f"device {path!r}: invalid permissions {perms!r} (r, w, m)")
        return DeviceNode(path, self.string(n.get("hostPath"), f"{where}.hostPath"), typ,
                          self.integer(n.get("major"), f"{where}.major", 0, 1 << 62) or 0,
                          self.integer(n.get("minor"), f"{where}.minor", 0, 1 << 62) or 0,
                          self.integer(n.get("fileMode"), f"{where}.fileMode", 0, 0o7777777),
                          perms, self.integer(n.get("uid"), f"{where}.uid", 0, _UINT32),
                          self.integer(n.get("gid"), f"{where}.gid", 0, _UINT32))

    def spec(self, value: Any, priority: int) -> Spec:
        raw = self.obj(value, "", _SPEC_KEYS)
        version = _scalar_string(raw.get("cdiVersion")) if raw.get("cdiVersion") is not None else None
        if not version:
            raise self.fail("cdiVersion", "required")
        if version not in VERSIONS:
            raise self.fail("cdiVersion", f"invalid version {version!r} (supported: {', '.join(VERSIONS)})")
        kind = self.string(raw.get("kind"), "kind", True)
        vendor, cls = parse_qualifier(kind)
        if not vendor:
            raise self.fail("kind", f"invalid kind {kind!r}: expected vendor.com/class")
        problem = vendor_error(vendor) or class_error(cls)
        if problem:
            raise self.fail("kind", problem)
        annotations = self.annotations(raw.get("annotations"), "annotations")
        edits = self.edits(raw.get("containerEdits"), "containerEdits")
        devices: list[Device] = []
        seen: set[str] = set()
        for i, d in enumerate(_list(self, raw.get("devices"), "devices")):
            w = f"devices[{i}]"
            d = self.obj(d, w, _DEVICE_KEYS)
            name = self.string(d.get("name"), f"{w}.name", True)
            problem = device_name_error(name)
            if problem:
                raise self.fail(f"{w}.name", problem)
            if name in seen:
                raise self.fail(f"{w}.name", f"device {name!r} is defined twice")
            seen.add(name)
            dev_edits = self.edits(d.get("containerEdits"), f"{w}.containerEdits")
            if dev_edits.empty():
                raise self.fail(f"{w}.containerEdits", f"device {name!r} has no container edits")
            devices.append(Device(name, self.annotations(d.get("annotations"), f"{w}.annotations"), dev_edits))
        if not devices:
            raise self.fail("devices", "the spec defines no devices")
        spec = Spec(self.path, version, kind, annotations, edits, tuple(devices), priority)
        needed, why = required_version(spec)
        if VERSIONS.index(needed) > VERSIONS.index(version):
            raise self.fail("cdiVersion", f"the spec version must be at least v{needed} ({why})")
        return spec


def _list(p: _Parser, value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise p.fail(where, f"expected a list, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _scalar_string(value: Any) -> str | None:
    """A scalar where CDI wants a string, as sigs.k8s.io/yaml turns it into one (`true` → "true")."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def required_version(spec: Spec) -> tuple[str, str]:
    """The lowest cdiVersion that has every feature `spec` uses, and the feature that needs it."""
    all_edits = [spec.edits, *(d.edits for d in spec.devices)]
    if any(e.intel_rdt is not None for e in all_edits):
        return "0.7.0", "intelRdt"
    if any(e.additional_gids for e in all_edits):
        return "0.7.0", "additionalGids"
    if spec.annotations or any(d.annotations for d in spec.devices):
        return "0.6.0", "annotations"
    if "." in parse_qualifier(spec.kind)[1]:
        return "0.6.0", "a dot in the class name"
    if any(d.name[:1].isdigit() for d in spec.devices):
        return "0.5.0", "a device name starting with a digit"
    if any(n.host_path for e in all_edits for n in e.device_nodes):
        return "0.5.0", "deviceNodes hostPath"
    if any(m.type for e in all_edits for m in e.mounts):
        return "0.4.0", "mounts type"
    return "0.3.0", ""
