"""A small blocking HTTP client for the cache services: 429 retried with backoff and Retry-After, every
request bounded by a deadline, bodies streamed to and from files."""

from __future__ import annotations

import email.utils
import http.client
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from workbench.cache.remote import RemoteCacheError

_CHUNK = 1 << 20
MAX_BACKOFF = 90.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class HTTPError(RemoteCacheError):
    def __init__(self, message: str, status: int = 0, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), else `default`."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise RemoteCacheError(f"unsupported URL {url!r}")
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=max(timeout, 0.1))
    return conn, (u.path or "/") + (f"?{u.query}" if u.query else "")


def request(
    method: str,
    url: str,
    *,
    deadline: float,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    out: BinaryIO | None = None,
    progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Response:
    """Send a request; a 429 is retried (Retry-After honoured, else backoff from 1 s doubling to 90 s) until
    `deadline` (time.monotonic()). With `out`, a 2xx body is streamed there (and not kept in the response).
    Non-2xx answers raise HTTPError; so does a body shorter than its Content-Length."""
    backoff = 1.0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HTTPError(f"{method} {_redact(url)}: timed out")
        try:
            conn, target = _connect(url, remaining)
            try:
                conn.request(method, target, body=body, headers=headers or {})
                resp = conn.getresponse()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if resp.status == 429:
                    resp.read()
                    wait = retry_after(hdrs.get("retry-after"), backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    if time.monotonic() + wait >= deadline:
                        raise HTTPError(f"{method} {_redact(url)}: still throttled (429) when the timeout ran out", 429)
                    sleep(wait)
                    continue
                if not 200 <= resp.status < 300 or out is None:
                    data = resp.read()
                    if not 200 <= resp.status < 300:
                        raise HTTPError(f"{method} {_redact(url)}: {resp.status} {resp.reason}: "
                                        f"{data[:300].decode('utf-8', 'replace')}", resp.status, data)
                    return Response(resp.status, hdrs, data)
                done = 0
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done)
                return Response(resp.status, hdrs, b"")
            finally:
                conn.close()
        except http.client.IncompleteRead as e:
            raise HTTPError(f"{method} {_redact(url)}: connection closed after {len(e.partial)} bytes") from None
        except (OSError, http.client.HTTPException) as e:
            raise HTTPError(f"{method} {_redact(url)}: {e}") from None


def _redact(url: str) -> str:
    """A URL without its query (signed URLs carry their signature there)."""
    return url.split("?", 1)[0]
