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


MAX_EXTENTS = 340
"""The kernel's limit on the lines of a uid_map (newuidmap's too): our own id's line and 339 ranges."""


def map_args(own: int, found: list[Range]) -> list[str]:
    """newuidmap/newgidmap triples: our own id as 0, then the ranges one after another from 1.

    The kernel refuses a map whose host ids overlap, so ids an earlier line (or our own id) already maps are left
    out of later ones: duplicate or overlapping /etc/subuid lines then work instead of failing in newuidmap. File
    order is kept, so a file without overlaps maps exactly as before (images keep their owners across builds).
    """
    args = ["0", str(own), "1"]
    taken = [Range(own, 1)]
    inside = 1
    for r in found:
        for piece in _uncovered(r, taken):
            if len(args) // 3 >= MAX_EXTENTS:
                return args
            args += [str(inside), str(piece.start), str(piece.length)]
            inside += piece.length
            taken.append(piece)
    return args


def _uncovered(r: Range, taken: list[Range]) -> list[Range]:
    """The parts of `r` that no range in `taken` covers, in order."""
    pieces = [r]
    for t in taken:
        t_end = t.start + t.length
        kept = []
        for p in pieces:
            p_end = p.start + p.length
            if t_end <= p.start or p_end <= t.start:
                kept.append(p)
                continue
            if p.start < t.start:
                kept.append(Range(p.start, t.start - p.start))
            if t_end < p_end:
                kept.append(Range(t_end, p_end - t_end))
        pieces = kept
    return sorted(pieces)
