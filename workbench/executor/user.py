"""Resolve a step's USER against the container's own /etc/passwd and /etc/group (never the host's)."""

from __future__ import annotations

from pathlib import Path

from workbench.fsutil.paths import resolve_in_root


class UserError(Exception):
    """USER names a user or group the rootfs does not have."""


def etc_entries(rootfs: Path, path: str) -> list[list[str]]:
    """The colon-separated fields of each line of an /etc file (passwd, group) inside `rootfs`."""
    try:
        text = resolve_in_root(rootfs, path).read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """uid, gid and supplementary groups for USER `user` ("", name, uid, uid:gid, name:group)."""
    name, _, group = (user or "0").partition(":")
    if name.isdigit() and group.isdigit():  # BuildKit's fast path: no lookups, no supplementary groups
        return int(name), int(group), [int(group)]
    passwd = etc_entries(rootfs, "/etc/passwd")
    groups = etc_entries(rootfs, "/etc/group")
    entry = next((e for e in passwd if len(e) > 3 and (e[0] == name or (name.isdigit() and e[2] == name))), None)
    if name.isdigit():
        uid = int(name)
    elif entry is None:
        raise UserError(f"unable to find user {name}: no matching entries in passwd file")
    else:
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in groups if len(e) > 2 and e[0] == group), None)
            if g is None:
                raise UserError(f"unable to find group {group}: no matching entries in group file")
            gid = int(g[2])
        return uid, gid, [gid]  # as runc's GetExecUser: supplementary groups only in the implicit form
    member_of = [int(e[2]) for e in groups
                 if len(e) > 3 and entry is not None and entry[0] in e[3].split(",") and e[2].isdigit()]
    return uid, gid, sorted({gid, *member_of})
