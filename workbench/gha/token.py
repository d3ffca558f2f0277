"""Runtime tokens the emulator issues: HS256 JWTs with GitHub's `ac` claim (cache scopes and permissions).

The token `gha-server` prints at start also carries `wb_admin` (its operator's: faults, stats, new tokens);
tokens made through `/_wb/token` never do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

PERM_READ, PERM_WRITE = 1, 2
ISSUER = "workbench-gha-server"


@dataclass(frozen=True)
class Grant:
    """What a valid token allows."""

    scopes: list[tuple[str, int]]
    admin: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())


def issue(secret: bytes, scopes: list[tuple[str, int]], ttl: float = 6 * 3600, admin: bool = False) -> str:
    """A token granting `scopes` ([(scope, permission bits: 1 read, 2 write)]) for `ttl` seconds."""
    now = int(time.time())
    ac = json.dumps([{"Scope": s, "Permission": p} for s, p in scopes], separators=(",", ":"))
    claims: dict[str, object] = {"iss": ISSUER, "ac": ac, "nbf": now - 60, "iat": now, "exp": now + int(ttl)}
    if admin:
        claims["wb_admin"] = True
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_sign(secret, f'{head}.{body}')}"


def verify(secret: bytes, token: str) -> Grant | None:
    """What a token allows if this server issued it (signature), it is valid now (nbf, exp) and its claims
    are well-formed; else None."""
    parts = token.split(".")
    if len(parts) != 3 or not hmac.compare_digest(_sign(secret, f"{parts[0]}.{parts[1]}"), parts[2]):
        return None
    try:
        head, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
        if head.get("alg") != "HS256" or claims.get("iss") != ISSUER:
            return None
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or not isinstance(nbf, int | float) or exp < now or nbf > now:
            return None
        scopes = [(str(s["Scope"]), int(s["Permission"])) for s in json.loads(claims.get("ac") or "[]")]
        if any(not 0 < p <= PERM_READ | PERM_WRITE for _, p in scopes):
            return None
        return Grant(scopes, claims.get("wb_admin") is True)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
