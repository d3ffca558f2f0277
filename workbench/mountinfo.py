"""This mount namespace's mounts, as /proc/self/mountinfo lists them."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

_OCTAL = re.compile(rb"\\([0-7]{3})")  # mountinfo escapes space, tab, newline and backslash as \ooo


class Mount(NamedTuple):
    point: str  # where it is mounted (decoded as os.fsdecode does)
    fstype: str


def mounts() -> list[Mount]:
    """Every mount, in mount order (a later one at the same point is on top). OSError if unreadable."""
    with open("/proc/self/mountinfo", "rb") as f:
        data = f.read()
    found = []
    for line in data.splitlines():
        left, sep, right = line.partition(b" - ")
        fields = left.split(b" ")
        if not sep or len(fields) < 5:
            continue
        point = _OCTAL.sub(lambda m: bytes([int(m[1], 8)]), fields[4])
        found.append(Mount(os.fsdecode(point), os.fsdecode(right.split(b" ", 1)[0])))
    return found
