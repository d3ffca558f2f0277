"""Which registries are spoken to how, and with whose credentials.

Plain HTTP for localhost / 127.0.0.1 / ::1 (any port), for hosts listed in $WORKBENCH_INSECURE_REGISTRIES
(comma-separated "host[:port]") and for those with `http = true` in the config file's `[registry."HOST"]`
table (buildkitd.toml's; `insecure = true` there keeps HTTPS but skips certificate checks), HTTPS elsewhere.
The config file is $WORKBENCH_CONFIG, else /etc/workbench/workbench.toml if present. Credentials come from
docker's config.json "auths" ($DOCKER_CONFIG or ~/.docker).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TIMEOUT = 30.0  # seconds, for connecting and for each read
PARALLEL_PULLS = 4  # blobs moved at once, by a pull or a push
INSECURE_ENV = "WORKBENCH_INSECURE_REGISTRIES"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

_HUB_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io")


def _host(registry: str) -> str:
    """The host name of "host[:port]" or "[v6]:port"."""
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_local(registry: str) -> bool:
    """Loopback registries are spoken to over plain HTTP."""
    return _host(registry) in LOCAL_HOSTS


def insecure_registries() -> set[str]:
    """The hosts ("host" or "host:port") configured for plain HTTP in $WORKBENCH_INSECURE_REGISTRIES."""
    return {h.strip().split("://", 1)[-1].rstrip("/") for h in os.environ.get(INSECURE_ENV, "").split(",")
            if h.strip()}


def registry_config(registry: str) -> dict[str, Any]:
    """The config file's `[registry."HOST[:PORT]"]` table for `registry` (the host:port entry, else the host's)."""
    import tomllib

    path = Path(os.environ.get("WORKBENCH_CONFIG") or "/etc/workbench/workbench.toml")
    try:
        with open(path, "rb") as f:
            tables = tomllib.load(f).get("registry") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    entry = tables.get(registry) if isinstance(tables, dict) else None
    if entry is None and isinstance(tables, dict):
        entry = tables.get(_host(registry))
    return entry if isinstance(entry, dict) else {}


def uses_http(registry: str) -> bool:
    """Plain HTTP for loopback and for hosts configured insecure, HTTPS otherwise."""
    insecure = insecure_registries()
    return (is_local(registry) or registry in insecure or _host(registry) in insecure
            or registry_config(registry).get("http") is True)


def verifies_tls(registry: str) -> bool:
    """Whether certificates are checked (all but the hosts with `insecure = true` in the config file)."""
    return registry_config(registry).get("insecure") is not True


def docker_credentials(registry: str, config_dir: Path | None = None) -> tuple[str, str] | None:
    """(user, password) for `registry` from docker's config.json "auths" ($DOCKER_CONFIG or ~/.docker), if any."""
    import base64

    if config_dir is None:
        config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        auths = json.loads((config_dir / "config.json").read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    wanted = set(_HUB_HOSTS) if registry in _HUB_HOSTS else {registry}
    for key, entry in auths.items():
        host = key.split("://", 1)[-1].split("/", 1)[0]
        if host not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if user:
                return user, password
    return None
