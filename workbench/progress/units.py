"""Byte counts, sizes and times as BuildKit's Go code writes them in its progress output."""

from __future__ import annotations

import time


def format_bytes(n: int) -> str:
    """`fmt.Sprintf("%.2f", units.Bytes(n))`: decimal units; under 1000 the plain integer (BuildKit v0.20's
    units drops the precision there: `2B`, not `02B`)."""
    if -1000 < n < 1000:
        return f"{n}B"
    value, i = float(n), 0
    while abs(value) >= 1000 and i < 5:
        value, i = value / 1000, i + 1
    return f"{value:.2f}{('kB', 'MB', 'GB', 'TB', 'PB', 'EB')[i - 1]}"


def format_binary_size(n: int) -> str:
    """`fmt.Sprintf("%#g", units.Bytes(n))` as the log clip message shows it: `2MiB`, `200KiB`, `1.5GiB`."""
    if n < 1024:
        return f"{n}B"
    value, i = float(n), 0
    while value >= 1024 and i < 6:
        value, i = value / 1024, i + 1
    text = repr(value)
    return (text[:-2] if text.endswith(".0") else text) + ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")[i - 1]


def rfc3339(ts: float) -> str:
    """A wall-clock time as Go's JSON writes a UTC time.Time: RFC 3339, fraction to the ns, trailing zeros cut."""
    micros = round(ts * 1_000_000)
    sec, frac = divmod(micros, 1_000_000)
    digits = f"{frac * 1000:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ("." + digits if digits else "") + "Z"
