"""Subordinate id ranges from /etc/subuid and /etc/subgid, matched as shadow-utils' newuidmap does."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


class Range(NamedTuple):
    start: int
    length: int


def ranges(path: Path, name: str | None, uid: int) -> list[Range]:
    """The ranges of `path` owned by user `name` or by the number `uid` (lines `OWNER:START:COUNT`), in file order.

    Comments, blank and malformed lines are skipped, as shadow-utils skips them; a missing file gives none.
    """
    try:
        text = path.read_text()
    except (FileNotFoundError, PermissionError):
        return []
    owners = {str(uid)} | ({name} if name else set())
    found = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in owners or line.lstrip().startswith("#"):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            found.append(Range(start, count))
    return found


def map_args(own: int, found: list[Range]) -> list[str]:
    """newuidmap/newgidmap triples: our own id as 0, then the ranges one after another from 1."""
    args = ["0", str(own), "1"]
    inside = 1
    for r in found:
        args += [str(inside), str(r.start), str(r.length)]
        inside += r.length
    return args
