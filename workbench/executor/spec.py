"""The OCI runtime spec (config.json) for a build step, with Docker's/BuildKit's defaults."""

from __future__ import annotations

import functools
import posixpath
import resource
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
NOFILE = 1048576
HOST_NETWORKS = ("host", "default", "")  # no CNI here: BuildKit's default network is the host's


@functools.cache
def nofile_limit() -> int:
    """BuildKit's RLIMIT_NOFILE (1048576), capped at our own hard limit when we may not raise it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard >= NOFILE:
        return NOFILE
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        return hard
    return NOFILE if cap_eff & (1 << 24) else hard  # CAP_SYS_RESOURCE


@dataclass
class Mount:
    """An extra mount in the container (bind, tmpfs, ...), as in the OCI spec."""

    type: str
    source: str
    destination: str
    options: list[str] = field(default_factory=list)

    def to_oci(self) -> dict[str, Any]:
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


def with_default_path(env: list[str]) -> list[str]:
    """`env` with BuildKit's default PATH added when it sets none."""
    return list(env) if any(e.startswith("PATH=") for e in env) else [DEFAULT_PATH, *env]


def generate_spec(spec: ExecSpec, rootfs: Path, resolv_conf: Path, hosts: Path, uid: int, gid: int,
                  groups: list[int]) -> dict[str, Any]:
    """The OCI runtime config for `spec` with `rootfs` as root and the given host-side hosts/resolv.conf."""
    if spec.network not in HOST_NETWORKS and spec.network != "none":
        raise ValueError(f"unsupported network mode {spec.network!r} (host or none)")
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network not in HOST_NETWORKS:
        namespaces.append({"type": "network"})
    ro = ["nosuid", "noexec", "nodev", "ro"]
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
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ro},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": [*ro, "relatime"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv_conf), "options": bind_ro},
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": bind_ro},
        *(m.to_oci() for m in spec.mounts),
    ]
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": sorted(set(groups)) or [gid]},
            "args": list(spec.args),
            "env": with_default_path(spec.env),
            "cwd": posixpath.normpath("/" + spec.cwd.lstrip("/")),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
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
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
