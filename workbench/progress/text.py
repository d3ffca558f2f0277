"""Text from Dockerfiles and file names made safe to print: no raw control characters or escape sequences."""

from __future__ import annotations

import re

_CANDIDATES = re.compile(r"[^\x20-\x7e]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable(text: str, keep: str = "") -> str:
    """`text` with each character that is not printable (controls and escape sequences, white space other
    than a plain space, invisible format characters such as a BOM or a right-to-left override) unless in
    `keep`, and each byte that is not UTF-8 (a surrogate escape) written as `\\n`, `\\t`, `\\x1b`,
    `\\u202e`, `\\xff`, …; printable text is left as it is."""

    def escape(m: re.Match[str]) -> str:
        ch = m.group()
        if ch in keep or ch.isprintable():
            return ch
        if ch in _NAMED:
            return _NAMED[ch]
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            return f"\\x{code - 0xDC00:02x}"
        if code < 0x100:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return _CANDIDATES.sub(escape, text)


def shorten(text: str, limit: int = 200) -> str:
    """`text`, cut after `limit` characters (saying how many more there were)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
