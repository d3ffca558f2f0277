"""Sizes and durations as docker reads and prints them, and disk usage as `du` measures it."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str) -> int:
    """Bytes in `text` as docker reads sizes (units.RAMInBytes): `100`, `512k`, `50MB`, `2GiB` (binary units)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"invalid size {text!r} (e.g. 512MB, 2GB)")
    power = "kmgtp".find(m[2].lower()) + 1 if m[2] else 0
    return int(float(m[1]) * (1024**power))


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string: `24h`, `10m`, `1h30m`, `90s`, `1.5h`."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m[1]) * _DURATION_UNITS[m[2]]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"invalid duration {text!r} (e.g. 24h, 10m, 1h30m)")
    return sign * total


def human_size(n: float) -> str:
    """Docker's units.HumanSize: decimal units, 4 significant digits (`12.35MB`, `0B`)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return f"{n:.4g}{units[i]}"


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration (`Less than a second`, `5 minutes`, `About an hour`, `3 days`)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def disk_usage(path: Path) -> int:
    """Allocated bytes of `path` and everything under it (as `du -sB1 -x`): hard links once, no mounts crossed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    dev = st.st_dev
    seen: set[int] = set()
    total = st.st_blocks * 512
    if not stat.S_ISDIR(st.st_mode):
        return total
    stack = [os.fspath(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    est = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if est.st_dev != dev:
                    continue
                if est.st_nlink > 1 and not stat.S_ISDIR(est.st_mode):
                    if est.st_ino in seen:
                        continue
                    seen.add(est.st_ino)
                total += est.st_blocks * 512
                if stat.S_ISDIR(est.st_mode):
                    stack.append(e.path)
    return total
