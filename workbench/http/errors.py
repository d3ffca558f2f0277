"""The one error of the HTTP layer, and URLs made fit for messages."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping


def redact(url: str) -> str:
    """`url` without a password (user:pass@host → user:xxxxx@host), for messages."""
    parts = urllib.parse.urlsplit(url) if "://" in url else None
    if parts is None or parts.password is None:
        return url
    netloc = f"{parts.username}:xxxxx@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def shown(url: str) -> str:
    """`url` redacted and without its query (signed URLs carry their signature there)."""
    return redact(url).split("?", 1)[0]


class HttpError(Exception):
    """A request that failed.

    `status` is the answer's HTTP status, or 0 when none came (connection, TLS, timeout, a body cut short; then
    `cause` is the underlying exception and `reason` says what happened). For an answer, `body` holds the
    start of its body and `headers` its headers (lower-case names). `challenged` says that an auth hook had
    already answered a challenge for this request. `url` is redacted (no password, no query).
    """

    def __init__(self, method: str, url: str, status: int = 0, reason: str = "", *, body: bytes = b"",
                 headers: Mapping[str, str] | None = None, cause: BaseException | None = None,
                 challenged: bool = False, message: str = "") -> None:
        self.method = method
        self.url = shown(url)
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.cause = cause
        self.challenged = challenged
        if not message:
            message = f"{status} {reason}: {body[:300].decode('utf-8', 'replace')}" if status else reason
        super().__init__(f"{method} {self.url}: {message}")


class BrokenDownload(HttpError):
    """A body that broke off and could not be finished: `resumptions` Range requests were made before giving up,
    or (`unresumable`) the server did not answer one with 206 Partial Content."""

    def __init__(self, method: str, url: str, reason: str, cause: BaseException | None, resumptions: int,
                 unresumable: bool) -> None:
        super().__init__(method, url, 0, reason, cause=cause)
        self.resumptions = resumptions
        self.unresumable = unresumable
