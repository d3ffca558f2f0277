"""Runtime tokens the emulator issues: HS256 JWTs with GitHub's `ac` claim (cache scopes and permissions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(secret: bytes, scopes: list[tuple[str, int]], ttl: float = 6 * 3600) -> str:
    """A token granting `scopes` ([(scope, permission bits: 1 read, 2 write)]) for `ttl` seconds."""
    now = int(time.time())
    ac = json.dumps([{"Scope": s, "Permission": p} for s, p in scopes], separators=(",", ":"))
    claims = {"iss": "workbench-gha-server", "ac": ac, "nbf": now - 60, "iat": now, "exp": now + int(ttl)}
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def verify(secret: bytes, token: str) -> list[tuple[str, int]] | None:
    """The scopes of a token this server issued and that is valid now, else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    want = _b64(hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(want, parts[2]):
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
        now = time.time()
        if claims.get("exp", 0) < now or claims.get("nbf", 0) > now:
            return None
        return [(str(s["Scope"]), int(s["Permission"])) for s in json.loads(claims.get("ac") or "[]")]
    except (ValueError, KeyError, TypeError):
        return None
