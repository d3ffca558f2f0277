"""Checking what a client sends the emulator: every parameter is parsed here, and a bad one raises BadParam
naming the parameter and what is wrong with it (the server answers 400 with that text)."""

from __future__ import annotations

import base64
import re
from typing import Any

MAX_KEY = 512  # GitHub's limit on a cache key
MAX_KEYS = 10  # a key and up to nine restore keys (@actions/cache)
MAX_VERSION = 512
MAX_BLOCK_ID = 64  # bytes, decoded (Azure)


class BadParam(ValueError):
    def __init__(self, param: str, why: str) -> None:
        super().__init__(f"{param}: {why}")
        self.param = param


def integer(param: str, text: str | None, default: int, low: int, high: int) -> int:
    """A decimal integer in [low, high]; `default` when absent or empty."""
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?[0-9]+", text):
        raise BadParam(param, f"{text[:40]!r} is not a whole number")
    if len(text) > 20 or not low <= int(text) <= high:
        raise BadParam(param, f"{text[:40]} is out of range ({low} to {high})")
    return int(text)


def json_integer(param: str, value: Any, low: int, high: int) -> int:
    """A JSON number, or a string of digits (proto3 JSON writes int64 as a string), in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadParam(param, f"{value!r} is not an integer")
    return integer(param, str(value), -1, low, high) if isinstance(value, str) else _in(param, value, low, high)


def _in(param: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BadParam(param, f"{value} is out of range ({low} to {high})")
    return value


def key(param: str, value: Any) -> str:
    """A cache key: a non-empty string of at most 512 characters without a comma."""
    if not isinstance(value, str) or not value:
        raise BadParam(param, "a non-empty string is required")
    if len(value) > MAX_KEY:
        raise BadParam(param, f"longer than {MAX_KEY} characters")
    if "," in value:
        raise BadParam(param, "a key cannot contain a comma")
    return value


def keys(param: str, values: list[Any]) -> list[str]:
    """Lookup keys, the first one the primary."""
    if not values:
        raise BadParam(param, "at least one key is required")
    if len(values) > MAX_KEYS:
        raise BadParam(param, f"at most {MAX_KEYS} keys")
    return [key(param, v) for v in values]


def version(param: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadParam(param, "a non-empty string is required")
    if len(value) > MAX_VERSION or not value.isprintable():
        raise BadParam(param, f"want at most {MAX_VERSION} printable characters")
    return value


def content_range(text: str, limit: int) -> tuple[int, int]:
    """`bytes START-END/*` (or `/TOTAL`) of an upload to an entry of at most `limit` bytes → (start, end)."""
    m = re.fullmatch(r"bytes ([0-9]{1,30})-([0-9]{1,30})/(\*|[0-9]{1,30})", text)
    if m is None:
        raise BadParam("Content-Range", "want `bytes START-END/*`")
    start, end = int(m[1]), int(m[2])
    if end < start:
        raise BadParam("Content-Range", f"the range ends ({end}) before it starts ({start})")
    if end >= limit:
        raise BadParam("Content-Range", f"bytes {start}-{end} go past the {limit} bytes reserved for the entry")
    if m[3] != "*" and end >= int(m[3]):
        raise BadParam("Content-Range", f"bytes {start}-{end} go past the total size {m[3]}")
    return start, end


def block_id(text: str) -> bytes:
    """An Azure block id: base64 of at most 64 bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise BadParam("blockid", "not base64") from None
    if not raw or len(raw) > MAX_BLOCK_ID:
        raise BadParam("blockid", f"want 1 to {MAX_BLOCK_ID} bytes")
    return raw


def byte_range(param: str, text: str, total: int) -> tuple[int, int] | None:
    """`bytes=START-[END]` within a blob of `total` bytes → (start, end inclusive); None without a range."""
    if not text:
        return None
    m = re.fullmatch(r"bytes=([0-9]{1,30})-([0-9]{0,30})", text)
    if m is None:
        raise BadParam(param, "want bytes=START-[END]")
    start = int(m[1])
    end = int(m[2]) if m[2] else total - 1
    if m[2] and end < start:
        raise BadParam(param, f"the range ends ({end}) before it starts ({start})")
    return start, min(end, total - 1)


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadParam("body", "want a JSON object")
    return body
