"""Container edits applied to a step's OCI runtime config, as CDI v0.8.0's `Cache.InjectDevices`.

Per device, its spec's own edits (once per spec) then the device's, all appended and applied at once:
env replaces same-named entries, device nodes take type and numbers from the host node and get a
devices-cgroup allow rule, mounts replace those at the same path and are then sorted by depth, hooks
go to their OCI stage, additional GIDs join the process user's.

Rootless (in our user namespace) a node cannot be created, and runc would bind the host's node at the
container's path: each node is bind-mounted from its host path instead (as rootless podman does), and a node
the user may not open is refused with one line.
"""

from __future__ import annotations

import os
import posixpath
import stat
from typing import Any

from workbench.cdi.registry import Registry
from workbench.cdi.spec import ContainerEdits, DeviceNode, Hook, Mount
from workbench.rootless.userns import inside_user_namespace, outside_uid


class InjectError(ValueError):
    """Injection failed (a host device node is missing, ...); the step cannot run."""


def collect_edits(registry: Registry, devices: list[str]) -> ContainerEdits:
    """The combined edits of `devices` (qualified names, all registered)."""
    env: list[str] = []
    nodes: list[DeviceNode] = []
    mounts: list[Mount] = []
    hooks: list[Hook] = []
    gids: list[int] = []
    rdt = None
    seen_specs: set[str] = set()
    unresolved = []
    for name in devices:
        dev = registry.get(name)
        if dev is None:
            unresolved.append(name)
            continue
        parts = []
        if dev.spec.path not in seen_specs:
            seen_specs.add(dev.spec.path)
            parts.append(dev.spec.edits)
        parts.append(dev.device.edits)
        for e in parts:
            env += e.env
            nodes += e.device_nodes
            mounts += e.mounts
            hooks += e.hooks
            gids += e.additional_gids
            rdt = e.intel_rdt if e.intel_rdt is not None else rdt
    if unresolved:
        raise InjectError(f"unresolvable CDI devices {', '.join(unresolved)}")
    return ContainerEdits(tuple(env), tuple(nodes), tuple(mounts), tuple(hooks), rdt, tuple(gids))


def _host_node(node: DeviceNode) -> tuple[str, int, int]:
    """(type, major, minor) of the node, filled from the host device as CDI's fillMissingInfo."""
    host = node.host_path or node.path
    if node.type and (node.major != 0 or node.type == "p"):
        return node.type, node.major, node.minor
    try:
        st = os.lstat(host)
    except OSError as e:
        raise InjectError(f'failed to stat CDI host device "{host}": {e.strerror}') from None
    if stat.S_ISBLK(st.st_mode):
        typ = "b"
    elif stat.S_ISCHR(st.st_mode):
        typ = "c"
    elif stat.S_ISFIFO(st.st_mode):
        typ = "p"
    else:
        raise InjectError(f'failed to stat CDI host device "{host}": not a device node')
    if node.type and node.type != typ:
        raise InjectError(f'CDI device ("{node.path}", "{host}"), host type mismatch ({node.type}, {typ})')
    typ = node.type or typ
    if node.major == 0 and typ != "p":
        return typ, os.major(st.st_rdev), os.minor(st.st_rdev)
    return typ, node.major, node.minor


def _rootless_bind(node: DeviceNode) -> dict[str, Any]:
    """A bind mount of the node's host path, when this user may open it as the node's permissions ask."""
    host = node.host_path or node.path
    perms = node.permissions or "rw"
    mode = (os.R_OK if "r" in perms else 0) | (os.W_OK if "w" in perms else 0)
    if not os.access(host, mode or os.R_OK):  # in our namespace: the host's owner and mode decide, as for the user
        try:
            st = os.stat(host)
        except OSError as e:
            raise InjectError(f'rootless: failed to stat CDI host device "{host}" (as {node.path}): {e.strerror}') \
                from None
        want = "+".join(w for w, f in (("read", os.R_OK), ("write", os.W_OK)) if mode & f) or "read"
        raise InjectError(f'rootless: CDI device node "{host}" (as {node.path}) cannot be opened for {want} by uid '
                          f"{outside_uid()} (mode {stat.filemode(st.st_mode)}); rootless builds can use only the "
                          f"device nodes your user may open: an admin grants access (a group or a udev rule) or "
                          f"builds as root")
    return {"destination": node.path, "type": "bind", "source": host, "options": ["bind", "nosuid"]}


def _parts(destination: str) -> int:
    return posixpath.normpath(destination).count("/")


def apply_edits(config: dict[str, Any], edits: ContainerEdits) -> None:
    """Apply `edits` to the OCI runtime `config` in place."""
    process = config.setdefault("process", {})
    user = process.setdefault("user", {"uid": 0, "gid": 0})
    if edits.env:
        env: list[str] = process.setdefault("env", [])
        for assignment in edits.env:
            key = assignment.split("=", 1)[0]
            for i, old in enumerate(env):
                if old.split("=", 1)[0] == key:
                    env[i] = assignment
                    break
            else:
                env.append(assignment)
    linux = config.setdefault("linux", {})
    rootless = inside_user_namespace()
    mounts: list[dict[str, Any]] = config.setdefault("mounts", []) if rootless or edits.mounts else []
    for node in edits.device_nodes:
        typ, major, minor = _host_node(node)
        if rootless:
            mounts[:] = [x for x in mounts if x.get("destination") != node.path]
            mounts.append(_rootless_bind(node))
            continue
        dev: dict[str, Any] = {"path": node.path, "type": typ, "major": major, "minor": minor}
        if node.file_mode is not None:
            dev["fileMode"] = node.file_mode
        uid = node.uid if node.uid is not None else (user.get("uid") or None)
        gid = node.gid if node.gid is not None else (user.get("gid") or None)
        if uid is not None:
            dev["uid"] = uid
        if gid is not None:
            dev["gid"] = gid
        devices = [d for d in linux.get("devices", []) if d.get("path") != node.path]
        linux["devices"] = [*devices, dev]
        if typ in ("b", "c"):
            rules = linux.setdefault("resources", {}).setdefault("devices", [])
            rules.append({"allow": True, "type": typ, "major": major, "minor": minor,
                          "access": node.permissions or "rwm"})
    if edits.mounts or (rootless and edits.device_nodes):
        for m in edits.mounts:
            mounts[:] = [x for x in mounts if x.get("destination") != m.container_path]
            entry: dict[str, Any] = {"destination": m.container_path, "source": m.host_path}
            if m.type:
                entry["type"] = m.type
            if m.options:
                entry["options"] = list(m.options)
            mounts.append(entry)
        mounts.sort(key=lambda x: (_parts(x["destination"]), x["destination"]))
    stages = {"prestart": "prestart", "createRuntime": "createRuntime", "createContainer": "createContainer",
              "startContainer": "startContainer", "poststart": "poststart", "poststop": "poststop"}
    for h in edits.hooks:
        hook: dict[str, Any] = {"path": h.path}
        if h.args:
            hook["args"] = list(h.args)
        if h.env:
            hook["env"] = list(h.env)
        if h.timeout is not None:
            hook["timeout"] = h.timeout
        config.setdefault("hooks", {}).setdefault(stages[h.hook_name], []).append(hook)
    if edits.intel_rdt is not None:
        linux["intelRdt"] = dict(edits.intel_rdt)
    for gid in edits.additional_gids:
        groups = user.setdefault("additionalGids", [])
        if gid and gid not in groups:
            groups.append(gid)


def inject(registry: Registry, config: dict[str, Any], devices: list[str]) -> None:
    """Inject the (resolved, qualified) `devices` into `config`."""
    if devices:
        apply_edits(config, collect_edits(registry, devices))
