"""`--chown` owners (`user[:group]`, names or ids) resolved against the destination's /etc files, as BuildKit's
file ops resolve them (client/llb WithUser, solver/llbsolver/ops/user_linux.go readUser)."""

from __future__ import annotations

import re
from pathlib import Path

from workbench.executor.user import etc_entries

_GO_INT32 = re.compile(r"[+-]?[0-9]+")


def _parse_id(text: str) -> int | None:
    """The id that `text` names as llb.WithUser reads it (`root`, or a base-10 int32 sent as uint32), else None.

    An empty name is sent as id 0 too (UserOpt.marshal sends ByName only for a non-empty name)."""
    if text in ("root", ""):
        return 0
    if not _GO_INT32.fullmatch(text) or not -2**31 <= int(text) < 2**31:
        return None
    return int(text) & 0xFFFFFFFF


def _field(entry: list[str], index: int) -> int:
    """A numeric field of an /etc entry; missing or not a number reads as 0 (moby/sys/user's parseLine)."""
    text = entry[index] if index < len(entry) else ""
    return int(text) if _GO_INT32.fullmatch(text) else 0


def _lookup(root: Path, etc_file: str, name: str) -> list[str] | None:
    return next((fields for fields in etc_entries(root, etc_file) if fields[0] == name), None)


def resolve_owner(root: Path, owner: str) -> tuple[int, int]:
    """uid, gid for `owner`.

    A name missing from /etc/passwd (or /etc/group) is not an error in BuildKit's file ops: it leaves the id as it
    was, 0 for a user. A user name without a group takes the user's primary gid; an id without a group is also the
    gid."""
    user, sep, group = owner.partition(":")
    uid = gid = 0
    user_id = _parse_id(user)
    if user_id is not None:
        uid = gid = user_id
    else:
        entry = _lookup(root, "/etc/passwd", user)
        if entry is not None:
            uid, gid = _field(entry, 2), _field(entry, 3)
    if not sep:
        return uid, gid
    group_id = _parse_id(group)
    if group_id is not None:
        return uid, group_id
    gentry = _lookup(root, "/etc/group", group)
    return uid, (_field(gentry, 2) if gentry is not None else gid)
