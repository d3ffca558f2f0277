"""Which registries are spoken to how, and with whose credentials.

Plain HTTP for localhost / 127.0.0.1 / ::1 (any port), for hosts listed in $WORKBENCH_INSECURE_REGISTRIES
(comma-separated "host[:port]") and for those with `http = true` in the config file's `[registry."HOST"]`
table (buildkitd.toml's; `insecure = true` there keeps HTTPS but skips certificate checks), HTTPS elsewhere.
The config file is $WORKBENCH_CONFIG, else /etc/workbench/workbench.toml if present (an ordinary user's
$XDG_CONFIG_HOME/workbench/workbench.toml first: workbench.xdg). Credentials come from
docker's config.json ($DOCKER_CONFIG or ~/.docker): its credential helper for the host (`credHelpers`, else
`credsStore`) when one is configured, as docker asks it, else "auths".
"""

from __future__ import annotations

import json
import os
import re
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

    from workbench.xdg import config_file

    found = os.environ.get("WORKBENCH_CONFIG") or config_file()
    if not found:
        return {}
    path = Path(found)
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


HELPER_TIMEOUT = 30.0  # seconds a `docker-credential-*` helper may take
_HUB_SERVER = "https://index.docker.io/v1/"  # what docker names Docker Hub to its credential helpers


def docker_credentials(registry: str, config_dir: Path | None = None) -> tuple[str, str] | None:
    """(user, password) for `registry` from docker's config.json ($DOCKER_CONFIG or ~/.docker), if any: from the
    host's credential helper when one is configured (`credHelpers`, else `credsStore`), else from "auths".
    An identity token comes back as ("<token>", token), as helpers give it."""
    if config_dir is None:
        config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((config_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    hub = registry in _HUB_HOSTS
    server = _HUB_SERVER if hub else registry
    helpers = config.get("credHelpers")
    helper = helpers.get(server) if isinstance(helpers, dict) else None
    if not helper and hub and isinstance(helpers, dict):
        helper = next((helpers[h] for h in _HUB_HOSTS if helpers.get(h)), None)
    helper = helper or config.get("credsStore")
    if helper and isinstance(helper, str):
        return helper_credentials(helper, server)
    auths = config.get("auths")
    return _auths_entry(auths, set(_HUB_HOSTS) if hub else {registry}) if isinstance(auths, dict) else None


def helper_credentials(helper: str, server: str) -> tuple[str, str] | None:
    """`docker-credential-HELPER get` with `server` on stdin, as docker runs it: (Username, Secret), or None
    when the helper is missing, fails, has nothing for `server` or answers nonsense. Its output (the secret)
    goes nowhere else, and neither does its stderr."""
    import subprocess

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", helper):
        return None  # a name, not a path: the program is looked up on PATH only
    program = _on_path(f"docker-credential-{helper}")
    if program is None:
        return None
    try:
        done = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None  # "credentials not found in native keychain", or a broken helper
    try:
        answer = json.loads(done.stdout)
        user, secret = answer.get("Username"), answer.get("Secret")
    except (ValueError, AttributeError):
        return None
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    return user, secret


def _on_path(name: str) -> str | None:
    """`name`'s absolute path in PATH's absolute folders only: an empty or relative entry ("", ".", a trailing
    ':') would run a helper planted in the folder we were started in (a cloned repository)."""
    import shutil

    folders = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(d)]
    return shutil.which(name, path=os.pathsep.join(folders)) if folders else None


def _auths_entry(auths: dict[str, Any], wanted: set[str]) -> tuple[str, str] | None:
    import base64

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
