"""The OCI runtime spec (config.json) for a build step, with Docker's/BuildKit's defaults."""

from __future__ import annotations

import functools
import os
import posixpath
import resource
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.rootless import net
from workbench.rootless.userns import entered, inside_user_namespace

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "buildkitsandbox"
# Docker's default capability set (moby/oci/caps/defaults.go).
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# Capability names by bit number (linux/capability.h), for `security=insecure`.
CAP_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
# Devices BuildKit's WithInsecureSpec adds (besides loop devices): kmsg, cuse, fuse, kvm, tun, loop-control.
INSECURE_DEVICES = [("/dev/kmsg", 1, 11), ("/dev/cuse", 10, 203), ("/dev/fuse", 10, 229), ("/dev/kvm", 10, 232),
                    ("/dev/net/tun", 10, 200), ("/dev/loop-control", 10, 237)]
SECURITY_MODES = ("sandbox", "insecure")
NOFILE = 1048576
HOST_NETWORKS = ("host", "default", "")  # no CNI here: BuildKit's default network is the host's


@functools.cache
def nofile_limit() -> int:
    """BuildKit's RLIMIT_NOFILE (1048576), capped at our own hard limit when we may not raise it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard >= NOFILE:
        return NOFILE
    if inside_user_namespace():
        return hard  # CAP_SYS_RESOURCE of our user namespace does not raise a limit past the host's
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        return hard
    return NOFILE if cap_eff & (1 << 24) else hard  # CAP_SYS_RESOURCE


@functools.cache
def current_caps() -> list[str]:
    """Our own effective capabilities by name (what `security=insecure` grants, as BuildKit's cap.Current)."""
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        return list(DEFAULT_CAPS)
    return [name for bit, name in enumerate(CAP_NAMES) if cap_eff & (1 << bit)]


def _free_loop_id() -> int:
    """The next free loop device number (LOOP_CTL_GET_FREE), 0 when unknown."""
    import fcntl
    import os

    try:
        fd = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return max(fcntl.ioctl(fd, 0x4C82), 0)
    except OSError:
        return 0
    finally:
        os.close(fd)


def insecure_devices() -> list[dict[str, Any]]:
    """The device nodes an insecure step gets (as BuildKit's WithInsecureSpec)."""
    devices: list[dict[str, Any]] = [
        {"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o660, "uid": 0, "gid": 0}
        for path, major, minor in INSECURE_DEVICES
    ]
    devices += [{"path": f"/dev/loop{i}", "type": "b", "major": 7, "minor": i, "fileMode": 0o660, "uid": 0, "gid": 0}
                for i in range(_free_loop_id() + 8)]
    return devices


@dataclass
class Mount:
    """An extra mount in the container (bind, tmpfs, ...), as in the OCI spec."""

    type: str
    source: str
    destination: str
    options: list[str] = field(default_factory=list)

    def to_oci(self) -> dict[str, Any]:
        if self.type == "bind" and not self.source.startswith("/"):
            # runc resolves a relative source against the bundle dir: it would mount the bundle itself
            raise ValueError(f"bind mount source {self.source!r} for {self.destination} is not an absolute path")
        return {"destination": self.destination, "type": self.type, "source": self.source,
                "options": list(self.options)}


@dataclass
class ExecSpec:
    """What to run in a step's container."""

    args: list[str]
    env: list[str]
    cwd: str = "/"
    user: str = ""
    network: str = "host"  # "host" shares the host's netns; "none" gets a fresh one with only lo
    hostname: str = DEFAULT_HOSTNAME
    mounts: list[Mount] = field(default_factory=list)
    readonly_rootfs: bool = False
    security: str = "sandbox"  # "insecure": all capabilities, no masked/read-only paths, all devices, rw /sys
    spec_edits: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    """Edits of the finished config, in order (CDI container edits); a ValueError fails the step."""


def with_default_path(env: list[str]) -> list[str]:
    """`env` with BuildKit's default PATH added when it sets none."""
    return list(env) if any(e.startswith("PATH=") for e in env) else [DEFAULT_PATH, *env]


def generate_spec(spec: ExecSpec, rootfs: Path, resolv_conf: Path, hosts: Path, uid: int, gid: int,
                  groups: list[int]) -> dict[str, Any]:
    """The OCI runtime config for `spec` with `rootfs` as root and the given host-side hosts/resolv.conf."""
    if spec.network not in HOST_NETWORKS and spec.network != "none":
        raise ValueError(f"unsupported network mode {spec.network!r} (host or none)")
    if spec.security not in SECURITY_MODES:
        raise ValueError(f"unsupported security mode {spec.security!r} (sandbox or insecure)")
    insecure = spec.security == "insecure"
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network not in HOST_NETWORKS:
        namespaces.append({"type": "network"})
    sys_opts = ["nosuid", "noexec", "nodev", "rw" if insecure else "ro"]
    bind_ro = ["rbind", "ro", "nosuid", "nodev"]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        # insecure: writable sysfs and cgroupfs (BuildKit's oci.WithWriteableSysfs / WithWriteableCgroupfs)
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": [*sys_opts, "relatime"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv_conf), "options": bind_ro},
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": bind_ro},
        # The step's own mounts, parents before what is mounted inside them (as BuildKit sorts them).
        *(m.to_oci() for m in sorted(spec.mounts, key=lambda m: _depth(m.destination))),
    ]
    caps = list(DEFAULT_CAPS)
    capabilities: dict[str, list[str]] = {"bounding": caps, "effective": caps, "permitted": caps}
    devices_rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    linux_extra: dict[str, Any] = {}
    if insecure:  # BuildKit's security.WithInsecureSpec
        caps = list(dict.fromkeys(caps + current_caps()))
        capabilities = {k: list(caps) for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
        devices_rules = [{"allow": True, "type": "c", "access": "rwm"}, {"allow": True, "type": "b", "access": "rwm"}]
        linux_extra["devices"] = insecure_devices()
    spec_doc: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": sorted(set(groups)) or [gid]},
            "args": list(spec.args),
            "env": with_default_path(spec.env),
            "cwd": posixpath.normpath("/" + spec.cwd.lstrip("/")),
            "capabilities": capabilities,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile_limit(), "soft": nofile_limit()}],
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": spec.readonly_rootfs},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": f"/workbench/{secrets.token_hex(8)}",
            # No limits; only the default device rule (deny all, runc then allows its standard /dev nodes) so
            # CAP_MKNOD cannot reach host devices, as in Docker's and BuildKit's default spec.
            "resources": {"devices": devices_rules},
            "maskedPaths": [] if insecure else list(MASKED_PATHS),
            "readonlyPaths": [] if insecure else list(READONLY_PATHS),
            **linux_extra,
        },
    }
    if inside_user_namespace():
        _rootless(spec_doc)
        if spec.network in ("default", ""):  # not an explicit --network=host
            net.apply(spec_doc, resolv_conf.parent)
    for edit in spec.spec_edits:
        edit(spec_doc)
    return spec_doc


def _rootless(spec_doc: dict[str, Any]) -> None:
    """What runc can do as root of our user namespace (as runc's `spec --rootless`): no cgroup (it may not
    write one), the host's /sys bound recursively read-only instead of a new sysfs (that needs a netns of our
    own; `rro`, as plain `ro` would leave its submounts such as /sys/fs/cgroup writable), and no gid= mount
    options when no other group than ours exists. runc bind-mounts the default device nodes itself here."""
    linux = spec_doc["linux"]
    linux.pop("cgroupsPath", None)
    linux.pop("resources", None)
    single = (ns := entered()) is not None and ns.ids == 1
    mounts = []
    for m in spec_doc["mounts"]:
        if m["destination"] in ("/sys", "/sys/fs/cgroup"):
            continue
        if single:
            m = {**m, "options": [o for o in m["options"] if not o.startswith(("gid=", "uid="))]}
        mounts.append(m)
    mounts.insert(0, {"destination": "/sys", "type": "none", "source": "/sys",
                      "options": ["rbind", "nosuid", "noexec", "nodev", "rro"]})
    # an insecure step's device nodes: runc can only bind them from the host here, so those the host has and
    # the user may open are bound, the others left out (what the user's own processes could not open either)
    for dev in linux.pop("devices", None) or []:
        if os.access(dev["path"], os.R_OK | os.W_OK):
            mounts.append({"destination": dev["path"], "type": "bind", "source": dev["path"],
                           "options": ["bind", "nosuid"]})
    spec_doc["mounts"] = mounts


def _depth(destination: str) -> int:
    return len([p for p in posixpath.normpath("/" + destination).split("/") if p])
