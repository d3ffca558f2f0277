"""Where workbench keeps things: root's system paths, or an ordinary user's XDG base directories.

Root keeps state in /var/lib/workbench and reads /etc/workbench/workbench.toml; another user keeps state in
`$XDG_DATA_HOME/workbench` (~/.local/share/workbench) and reads `$XDG_CONFIG_HOME/workbench/workbench.toml`
(~/.config/...) when it exists, else the system file, as podman reads its registries.conf. Only `os` is
imported: the build client (`workbench.client`) uses this on its fast path.
"""

from __future__ import annotations

import os

SYSTEM_ROOT = "/var/lib/workbench"
SYSTEM_CONFIG = "/etc/workbench/workbench.toml"
CONFIG_NAME = "workbench.toml"


def _home(var: str, default: str) -> str:
    value = os.environ.get(var, "")
    return value if os.path.isabs(value) else os.path.expanduser(default)  # XDG: relative values are ignored


def system_user() -> bool:
    """Root, and not the root of our rootless user namespace (that one is an ordinary user)."""
    if os.geteuid() != 0:
        return False
    from workbench.rootless.userns import entered

    return entered() is None


def data_root() -> str:
    """The state root when neither --root nor $WORKBENCH_ROOT says: root's, else under $XDG_DATA_HOME."""
    if system_user():
        return SYSTEM_ROOT
    return os.path.join(_home("XDG_DATA_HOME", "~/.local/share"), "workbench")


def config_dir() -> str:
    """`/etc/workbench` for root, else `$XDG_CONFIG_HOME/workbench` (~/.config/workbench)."""
    if system_user():
        return os.path.dirname(SYSTEM_CONFIG)
    return os.path.join(_home("XDG_CONFIG_HOME", "~/.config"), "workbench")


def config_file() -> str | None:
    """The config file to read when none is named: the user's own if present, else the system's if present."""
    for path in dict.fromkeys((os.path.join(config_dir(), CONFIG_NAME), SYSTEM_CONFIG)):
        if os.path.isfile(path):
            return path
    return None


def runtime_dir() -> str:
    """This user's private dir for sockets: `$XDG_RUNTIME_DIR/workbench`, else `/tmp/workbench-UID`.

    Root ignores an `$XDG_RUNTIME_DIR` it does not own (`sudo -E` keeps the user's): what root keeps there must
    not live in a folder that user controls."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(base) and (os.geteuid() != 0 or _owned_by_root(base)):
        return os.path.join(base, "workbench")
    return f"/tmp/workbench-{os.getuid()}"


def _owned_by_root(path: str) -> bool:
    try:
        return os.lstat(path).st_uid == 0
    except OSError:
        return False
