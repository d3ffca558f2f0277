"""`RUN --mount=…` and `RUN --device=…` values, parsed and checked as BuildKit's instructions package does."""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_ALL_KEYS = ["type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode", "uid",
             "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env"]
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30,
               "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "p": 1 << 50, "pb": 1 << 50}


class MountSpecError(ValueError):
    """A bad --mount / --device value; the message is BuildKit's."""


@dataclass
class MountSpec:
    """One `--mount` as written (after variable expansion), before stages are resolved."""

    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = ""
    required: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int = 0
    env: str | None = None


def _suggest(message: str, value: str, options: list[str]) -> str:
    close = difflib.get_close_matches(value.lower(), options, n=1, cutoff=0.6)
    return f"{message} (did you mean {close[0]}?)" if close else message


def _parse_bool(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise MountSpecError(f"invalid value for {key}: {value}")


def parse_size(value: str) -> int:
    """`units.RAMInBytes`: `64m`, `1g`, `512k`, `1024` (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?b?)\s*", value, re.I)
    if m is None:
        raise MountSpecError(f"invalid size: '{value}'")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def _csv_fields(value: str) -> list[str]:
    try:
        rows = list(csv.reader([value], strict=True))
    except csv.Error as e:
        raise MountSpecError(f"failed to parse csv mounts: {e}") from None
    return rows[0] if rows else []


def parse_mount(value: str, expand: Callable[[str], str]) -> MountSpec:
    """Parse one `--mount` value; `expand` expands variables in each value (BuildKit does, except in `from`)."""
    m = MountSpec()
    ro_auto = True
    mode_set = uid_set = gid_set = False
    for field in _csv_fields(value):
        key, eq, val = field.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                m.readonly, ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m.readonly, ro_auto = False, False
            elif key == "required":
                if m.type not in ("secret", "ssh"):
                    raise MountSpecError(f"unexpected key '{key}' for mount type '{m.type}'")
                m.required = True
            else:
                raise MountSpecError(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "from":
            idx = val.find("$")
            if idx != -1 and idx != len(val) - 1:
                raise MountSpecError(f"'{key}' doesn't support variable expansion, define alias stage instead")
        else:
            val = expand(val)
        if key == "type":
            if val.lower() not in MOUNT_TYPES:
                raise MountSpecError(_suggest(f'unsupported mount type "{val}"', val, list(MOUNT_TYPES)))
            m.type = val.lower()
        elif key == "from":
            m.from_ = val
        elif key in ("source", "src"):
            m.source = val
        elif key in ("target", "dst", "destination"):
            m.target = val
        elif key in ("readonly", "ro"):
            m.readonly, ro_auto = _parse_bool(key, val), False
        elif key in ("readwrite", "rw"):
            m.readonly, ro_auto = not _parse_bool(key, val), False
        elif key == "required":
            if m.type not in ("secret", "ssh"):
                raise MountSpecError(f"unexpected key '{key}' for mount type '{m.type}'")
            m.required = _parse_bool(key, val)
        elif key == "id":
            m.id = val
        elif key == "sharing":
            if m.type != "cache":
                raise MountSpecError(f"invalid cache sharing set for {m.type} mount")
            if val.lower() not in ("shared", "private", "locked"):
                raise MountSpecError(f'unsupported sharing value "{val}"')
            m.sharing = val.lower()
        elif key == "mode":
            try:
                m.mode, mode_set = int(val, 8), True
            except ValueError:
                raise MountSpecError(f"invalid value {val} for mode") from None
        elif key in ("uid", "gid"):
            try:
                number = int(val, 10)
                if number < 0 or number > 0xFFFFFFFF:
                    raise ValueError
            except ValueError:
                raise MountSpecError(f"invalid value {val} for {key}") from None
            if key == "uid":
                m.uid, uid_set = number, True
            else:
                m.gid, gid_set = number, True
        elif key == "env":
            m.env = val
        elif key == "size":
            if m.type != "tmpfs":
                raise MountSpecError(f"unexpected key '{key}' for mount type '{m.type}'")
            m.size = parse_size(val)
        else:
            raise MountSpecError(_suggest(f"unexpected key '{key}' in '{field}'", key, _ALL_KEYS))
    if m.type not in ("secret", "ssh", "cache"):
        for name, was_set in (("mode", mode_set), ("uid", uid_set), ("gid", gid_set)):
            if was_set:
                raise MountSpecError(f'{name} not allowed for "{m.type}" type mounts')
    if ro_auto:
        m.readonly = m.type not in ("cache", "tmpfs")
    if m.sharing and m.type != "cache":
        raise MountSpecError(f"invalid cache sharing set for {m.type} mount")
    if m.type == "secret":
        if m.from_:
            raise MountSpecError("secret mount should not have a from")
        if not m.source and not m.target and not m.id:
            raise MountSpecError("invalid secret mount. one of source, target required")
        if m.source and m.id:
            raise MountSpecError("both source and id can't be set")
    return m


def parse_device(value: str) -> tuple[str, bool]:
    """`--device=NAME[,required[=BOOL]]` → (name, required)."""
    fields = _csv_fields(value)
    name, required = "", False
    for field in fields:
        key, eq, val = field.partition("=")
        lk = key.lower()
        if lk == "required":
            required = _parse_bool("required", val) if eq else True
        elif lk == "name" and eq and not name:  # --device=name=vendor.com/gpu=0,required=true
            name = val
        elif not name:
            name = field  # a CDI name may itself hold "=": vendor.com/gpu=all
        else:
            raise MountSpecError(f"invalid device field '{field}': the device name is already set")
    if not name:
        raise MountSpecError(f"device name is required in '{value}'")
    return name, required
