"""`--chown` owners (`user[:group]`, names or ids) resolved against the destination's /etc files."""

from __future__ import annotations

from pathlib import Path

from workbench.executor.user import etc_entries


class OwnerError(Exception):
    pass


def _lookup(root: Path, etc_file: str, name: str) -> list[str] | None:
    return next((fields for fields in etc_entries(root, etc_file) if fields[0] == name), None)


def resolve_owner(root: Path, owner: str) -> tuple[int, int]:
    """uid, gid for `owner`; a user without a group gets the same number as gid (Dockerfile COPY rule)."""
    user, _, group = owner.partition(":")
    if user.isdigit():
        uid = int(user)
    else:
        entry = _lookup(root, "/etc/passwd", user)
        if entry is None or len(entry) < 3:
            raise OwnerError(f"unable to convert uid/gid chown string to host mapping: can't find uid for user {user}")
        uid = int(entry[2])
    if not group:
        return uid, uid
    if group.isdigit():
        return uid, int(group)
    gentry = _lookup(root, "/etc/group", group)
    if gentry is None or len(gentry) < 3:
        raise OwnerError(f"unable to convert uid/gid chown string to host mapping: can't find gid for group {group}")
    return uid, int(gentry[2])
