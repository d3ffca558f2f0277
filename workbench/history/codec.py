"""Events ⇄ JSON lines, for any event dataclass of workbench.progress.events (new kinds need no change here).

A line is the event's fields plus a `type` tag (the class name). `bytes` are written as text when they are
valid UTF-8, else as `{"base64": …}`; nested dataclasses (SourceLocation) become objects and tuples lists.
Text holding file names that are not UTF-8 (surrogate-escaped, as Python reads them) keeps them as `\\udcXX`
escapes, so every line is valid UTF-8 and reads back to the same names.
Decoding follows the dataclass's type hints, so a field's Python type comes back exactly.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import types
import typing
from functools import cache
from typing import Any

from workbench.progress import events as _events
from workbench.progress.events import Event


class CodecError(ValueError):
    """A line that is not a known event; the message says what is wrong."""


def _encode_value(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_value(v) for k, v in value.items()}
    return value


def encode_event(event: Event) -> dict[str, Any]:
    """The JSON object for `event`: `{"type": "VertexLog", "ts": …, …fields}`."""
    doc: dict[str, Any] = {"type": type(event).__name__}
    for f in dataclasses.fields(event):
        doc[f.name] = _encode_value(getattr(event, f.name))
    return doc


_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps_event(event: Event) -> str:
    """One compact JSON line (no newline) for `event`; valid UTF-8 whatever names it holds."""
    text = json.dumps(encode_event(event), ensure_ascii=False, separators=(",", ":"))
    # Lone surrogates only occur inside JSON strings, where their \u escape reads back as the same character.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@cache
def event_types() -> dict[str, type[Event]]:
    """Every concrete event class of workbench.progress.events, by name."""
    found: dict[str, type[Event]] = {}
    for name in dir(_events):
        obj = getattr(_events, name)
        if isinstance(obj, type) and issubclass(obj, Event) and dataclasses.is_dataclass(obj):
            found[name] = obj
    return found


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)  # each class's own module resolves its annotations
    return _HINTS[cls]


def _decode_value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in options:
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return _decode_value(option, value)
        return _decode_value(options[0], value) if len(options) == 1 else value
    if hint is bytes:
        if isinstance(value, dict):
            return base64.b64decode(value["base64"])
        return str(value).encode("utf-8", "surrogateescape")
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode_value(args[0], v) for v in value)
        return tuple(_decode_value(a, v) for a, v in zip(args, value, strict=False))
    if origin is list:
        (arg,) = typing.get_args(hint) or (Any,)
        return [_decode_value(arg, v) for v in value]
    if origin is dict:
        args = typing.get_args(hint) or (Any, Any)
        return {k: _decode_value(args[1], v) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        hints = _hints(hint)
        names = {f.name for f in dataclasses.fields(hint)}
        return hint(**{k: _decode_value(hints[k], v) for k, v in value.items() if k in names})
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def decode_event(doc: dict[str, Any]) -> Event:
    """The event a JSON object stands for; unknown fields (from a newer recorder) are ignored."""
    name = doc.get("type")
    cls = event_types().get(name) if isinstance(name, str) else None
    if cls is None:
        raise CodecError(f"unknown event type {name!r}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in doc:
            kwargs[f.name] = _decode_value(hints[f.name], doc[f.name])
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise CodecError(f"{name}: {e}") from None


def loads_event(line: str) -> Event:
    """The event of one JSON line."""
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as e:
        raise CodecError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CodecError("not a JSON object")
    return decode_event(doc)
