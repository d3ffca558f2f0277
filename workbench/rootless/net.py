"""RUN's network rootless: the host's (shared through our user namespace, the default) or, on request
(`WORKBENCH_ROOTLESS_NET=slirp4netns`, rootlesskit's `--net` names), a network namespace of its own per step
with outbound access through slirp4netns, started and stopped by OCI hooks (workbench/rootless/slirp_hook.py).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

ENV = "WORKBENCH_ROOTLESS_NET"
LOOPBACK_ENV = "WORKBENCH_ROOTLESS_DISABLE_HOST_LOOPBACK"
"""`false`: a slirp4netns step may reach the host's 127.0.0.1 services at 10.0.2.2 (off by default, as rootlesskit's
`--disable-host-loopback` that BuildKit's and Docker's rootless set ups pass; Docker's variable has this shape)."""
MODES = ("host", "slirp4netns", "pasta")
TUN = "/dev/net/tun"
SLIRP_DNS = "10.0.2.3"  # slirp4netns's built-in DNS forwarder
_HOOK = str(Path(__file__).with_name("slirp_hook.py"))


def mode() -> str:
    """The requested rootless network; ValueError (one line) for an unknown or unusable one."""
    value = os.environ.get(ENV, "") or "host"
    if value not in MODES:
        raise ValueError(f"{ENV}={value}: unknown rootless network ({', '.join(MODES[:-1])} or {MODES[-1]})")
    if value == "pasta":
        raise ValueError(f"{ENV}=pasta: not supported yet (Debian 12's passt predates pasta's --netns use "
                         f"here); use {ENV}=slirp4netns")
    if value == "slirp4netns" and shutil.which("slirp4netns") is None:
        raise ValueError(f"{ENV}=slirp4netns: slirp4netns is not installed (apt-get install slirp4netns)")
    if value == "slirp4netns" and not os.access(TUN, os.R_OK | os.W_OK):
        raise ValueError(f"{ENV}=slirp4netns: {TUN} cannot be opened by your user (mode "
                         f"{_filemode(TUN)}); an admin fixes it with: chmod 0666 {TUN} (udev's default)")
    if value == "slirp4netns":
        host_loopback()  # a bad value is said before the build, not in the hook
    return value


def host_loopback() -> bool:
    """Whether slirp4netns steps may reach the host's loopback (only when the user says so); ValueError for a
    value that is neither true nor false."""
    value = os.environ.get(LOOPBACK_ENV, "").strip().lower() or "true"
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{LOOPBACK_ENV}={value}: expected true or false")
    return value in ("false", "0")


def _filemode(path: str) -> str:
    try:
        return stat.filemode(os.stat(path).st_mode)
    except OSError as e:
        return e.strerror or "missing"


def apply(spec_doc: dict[str, Any], bundle: Path) -> None:
    """Give a host-network step a network namespace of its own, wired by slirp4netns, when asked for."""
    if mode() != "slirp4netns":
        return
    spec_doc["linux"]["namespaces"].append({"type": "network"})
    (bundle / "resolv.conf").write_text(f"nameserver {SLIRP_DNS}\n")
    pidfile = str(bundle / "slirp4netns.pid")
    hook = [sys.executable, "-I", _HOOK]
    hooks = spec_doc.setdefault("hooks", {})
    start = [*hook, "start", pidfile] + (["--host-loopback"] if host_loopback() else [])
    hooks.setdefault("createRuntime", []).append({"path": sys.executable, "args": start, "timeout": 30})
    hooks.setdefault("poststop", []).append({"path": sys.executable, "args": [*hook, "stop", pidfile]})
