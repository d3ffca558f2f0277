"""What the client lends a build: secrets, ssh agents and the entitlements it grants.

Secret values are read only when a step mounts them; they never enter a digest, a cache key, an event
or a layer.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_ENTITLEMENTS = ("security.insecure", "network.host", "device")


class SessionError(ValueError):
    """A bad --secret / --ssh / --allow value; the message names the flag and the value."""


class SecretNotFound(SessionError):
    """The secret's source has no value (e.g. its environment variable is unset): optional mounts skip it."""


@dataclass(frozen=True)
class SecretSource:
    """Where a secret's value comes from: a client file or a client environment variable."""

    id: str
    path: str = ""
    env: str = ""

    def read(self) -> bytes:
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretNotFound(f"secret {self.id}: not found (environment variable {self.env} is not set)")
            return value.encode()
        try:
            return Path(self.path).read_bytes()
        except OSError as e:
            raise SessionError(f"secret {self.id}: cannot read {self.path}: {e.strerror}") from None


@dataclass
class Session:
    """The client side of one build."""

    secrets: dict[str, SecretSource] = field(default_factory=dict)
    ssh: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id -> agent sockets or key files
    entitlements: frozenset[str] = frozenset()

    def allows(self, entitlement: str) -> bool:
        return entitlement in self.entitlements or entitlement.split("=", 1)[0] in self.entitlements


def parse_secret(value: str) -> SecretSource:
    """`--secret id=ID[,src=PATH|,env=VAR][,type=file|env]`, as docker buildx reads it."""
    fields: dict[str, str] = {}
    typ = ""
    for part in value.split(","):
        key, eq, val = part.partition("=")
        if not eq:
            raise SessionError(f"--secret {value}: invalid field {part!r}: must be a key=value pair")
        key = key.strip().lower()
        if key == "type":
            if val not in ("file", "env"):
                raise SessionError(f"--secret {value}: unsupported secret type {val!r} (file or env)")
            typ = val
        elif key == "id":
            fields["id"] = val
        elif key in ("src", "source"):
            fields["src"] = val
        elif key == "env":
            fields["env"] = val
        else:
            raise SessionError(f"--secret {value}: unexpected key {key!r}")
    sid = fields.get("id", "")
    src, env = fields.get("src", ""), fields.get("env", "")
    if typ == "env" and not env:
        env, src = src, ""
    if not sid:
        sid = Path(src).name if src else env
    if not sid:
        raise SessionError(f"--secret {value}: an id is required")
    if not src and not env:
        if sid in os.environ:
            env = sid
        else:
            src = sid
    if src and not Path(src).is_file():
        raise SessionError(f"--secret {value}: {src} is not a readable file")
    return SecretSource(sid, src, env)


_SSH_ID = re.compile(r"[a-zA-Z0-9_.-]+")


def parse_ssh(value: str) -> tuple[str, tuple[str, ...]]:
    """`--ssh ID[=PATH[,PATH…]]` as docker buildx reads it: PATH is one agent socket or private key files;
    none means $SSH_AUTH_SOCK; ID (`default` when empty) is made of letters, digits, `_`, `.` and `-`."""
    sid, _, paths = value.partition("=")
    sid = sid or "default"
    if not _SSH_ID.fullmatch(sid):
        raise SessionError(f"--ssh {value}: invalid id {sid!r}: use letters, digits, '_', '.' and '-'")
    found = tuple(p for p in paths.split(",") if p)
    if not found:
        sock = os.environ.get("SSH_AUTH_SOCK", "")
        if not sock:
            raise SessionError(f"--ssh {value}: SSH_AUTH_SOCK is not set; give a socket or key path")
        found = (sock,)
    sockets = 0
    for p in found:
        try:
            mode = os.stat(p).st_mode
        except OSError as e:
            raise SessionError(f"--ssh {value}: {p}: {e.strerror}") from None
        if stat.S_ISSOCK(mode):
            sockets += 1
        elif not stat.S_ISREG(mode):
            raise SessionError(f"--ssh {value}: {p} is neither an agent socket nor a key file")
    if sockets > 1:
        raise SessionError(f"--ssh {value}: only one agent socket is allowed")
    if sockets and len(found) > 1:
        raise SessionError(f"--ssh {value}: give either one agent socket or key files, not both")
    return sid, found


def parse_ssh_flags(values: list[str]) -> dict[str, tuple[str, ...]]:
    """Every `--ssh` value by id; an id given twice is an error (as in buildx)."""
    out: dict[str, tuple[str, ...]] = {}
    for value in values:
        sid, paths = parse_ssh(value)
        if sid in out:
            raise SessionError(f"--ssh {value}: invalid duplicate id {sid!r}")
        out[sid] = paths
    return out


def parse_allow(value: str) -> str:
    """`--allow security.insecure|network.host|device[=NAME[,alias=A]]`."""
    name = value.split("=", 1)[0]
    if name not in KNOWN_ENTITLEMENTS:
        raise SessionError(f"--allow {value}: unknown entitlement (one of {', '.join(KNOWN_ENTITLEMENTS)})")
    if name == "device":
        from workbench.cdi.entitlements import EntitlementError, parse_device_entitlement

        try:
            parse_device_entitlement(value)
        except EntitlementError as e:
            raise SessionError(str(e)) from None
    return value


def secret_values(session: Session) -> list[bytes]:
    """The values the session's secrets have now, without surrounding whitespace (a file's last newline),
    longest first: what workbench.progress.redact masks."""
    values: set[bytes] = set()
    for source in session.secrets.values():
        try:
            value = source.read()
        except SessionError:
            continue
        if value.strip():
            values.add(value.strip())
    return sorted(values, key=len, reverse=True)
