"""CDI device names: `vendor.com/class=name`, checked as the CDI parser package checks them."""

from __future__ import annotations

import string

_ALNUM = set(string.ascii_letters + string.digits)


def parse_qualifier(kind: str) -> tuple[str, str]:
    """`vendor.com/class` → (vendor, class); ("", kind) when it is not of that form."""
    vendor, slash, cls = kind.partition("/")
    if not slash or not vendor or not cls:
        return "", kind
    return vendor, cls


def parse_device(name: str) -> tuple[str, str, str]:
    """`vendor.com/class=name` → (vendor, class, name); ("", "", name) when not fully qualified."""
    if not name or name.startswith("/"):
        return "", "", name
    kind, eq, dev = name.partition("=")
    if not eq or not kind or not dev:
        return "", "", name
    vendor, cls = parse_qualifier(kind)
    if not vendor:
        return "", "", name
    return vendor, cls, dev


def _check(value: str, what: str, first_ok: set[str], middle_ok: set[str]) -> str | None:
    if not value:
        return f"invalid (empty) {what}"
    if value[0] not in first_ok:
        return f"invalid {what} {value!r}, should start with a letter" + (" or digit" if first_ok == _ALNUM else "")
    for c in value[1:-1]:
        if c not in middle_ok:
            return f"invalid character {c!r} in {what} {value!r}"
    if len(value) > 1 and value[-1] not in _ALNUM:
        return f"invalid {what} {value!r}, should end with a letter or digit"
    return None


def vendor_error(vendor: str) -> str | None:
    """Why `vendor` is not a valid CDI vendor name (None when it is)."""
    return _check(vendor, "vendor", set(string.ascii_letters), _ALNUM | set("_-."))


def class_error(cls: str) -> str | None:
    """Why `cls` is not a valid CDI class name (dots allowed since spec 0.6.0)."""
    return _check(cls, "class", set(string.ascii_letters), _ALNUM | set("_-."))


def device_name_error(name: str) -> str | None:
    """Why `name` is not a valid CDI device name (None when it is)."""
    return _check(name, "device name", _ALNUM, _ALNUM | set("_-.:"))


def kind_error(kind: str) -> str | None:
    """Why `kind` is not a valid `vendor/class` qualifier (None when it is)."""
    vendor, cls = parse_qualifier(kind)
    if not vendor:
        return f"invalid kind {kind!r}: expected vendor.com/class"
    return vendor_error(vendor) or class_error(cls)
