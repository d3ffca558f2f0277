"""`HttpClient`: one urllib3 pool manager behind every request the engine makes.

Bodies are never decoded (a registry blob is hashed as sent) and are streamed: a `Response` is read on demand
and gives its connection back to the pool when closed. Redirects are followed as urllib does (GET and HEAD
always, POST after 301/302/303 as a GET) and credentials from an `AuthHook` go to the first hop only, never to
a redirect target (blob storage behind signed URLs). `resumable()` finishes a body that broke off with Range
requests.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Protocol

from workbench.http.errors import BrokenDownload, HttpError
from workbench.http.retry import IDEMPOTENT, NO_RETRY, RetryPolicy, retry_after

if TYPE_CHECKING:
    import urllib3

# urllib3, http.client and urllib.request (both import ssl) are imported on first use: importing this is cheap
CHUNK = 1 << 20
MAX_REDIRECTS = 10
_ERROR_BODY = 64 << 10
_REDIRECTS = (301, 302, 303, 307, 308)

Body = bytes | IO[bytes] | None


class AuthHook(Protocol):
    """Credentials for a request's first hop, and what to do when the server challenges them (a 401)."""

    def authorize(self, url: str) -> dict[str, str]:
        """Headers that authenticate a request to `url` (none yet: {})."""
        ...

    def challenge(self, error: HttpError, sent: Mapping[str, str]) -> bool:
        """A 401 came back for a request sent with the headers `sent`: earn credentials (or raise); True sends
        the request once more with `authorize()`'s headers."""
        ...


class StaticAuth:
    """Fixed credentials (a Basic header for a token endpoint), sent on the first hop only."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = dict(headers)

    def authorize(self, url: str) -> dict[str, str]:
        return dict(self.headers)

    def challenge(self, error: HttpError, sent: Mapping[str, str]) -> bool:
        return False


def root_cause(exc: BaseException) -> BaseException:
    """The socket, TLS or http.client error under urllib3's wrappers."""
    import urllib3.exceptions as u3

    for _ in range(8):
        if isinstance(exc, u3.MaxRetryError) and exc.reason is not None:
            exc = exc.reason
        elif isinstance(exc, u3.HTTPError):
            inner = exc.__cause__ or next((a for a in exc.args if isinstance(a, BaseException)), None)
            if inner is None:
                break
            exc = inner
        else:
            break
    return exc


def _transport_error(method: str, url: str, exc: BaseException, received: int | None = None) -> HttpError:
    import http.client

    cause = root_cause(exc)
    if isinstance(cause, http.client.IncompleteRead) and received is not None:
        partial = cause.partial  # urllib3's counts every byte so far, http.client's holds this read's bytes
        reason = f"connection closed after {partial if isinstance(partial, int) else received + len(partial)} bytes"
    else:
        reason = str(cause) or type(cause).__name__
    return HttpError(method, url, 0, reason, cause=cause)


class Response:
    """An answer whose body is read on demand; use it with `with` (or close it)."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, method: str, url: str) -> None:
        self._raw = raw
        self.method = method
        self.url = url
        self.status = raw.status
        self.reason = raw.reason or ""
        self.headers = raw.headers
        self.received = 0

    def read(self, amt: int | None = None) -> bytes:
        """Up to `amt` bytes of the body (all of it without `amt`); b"" at its end. HttpError (status 0) when
        the connection breaks, times out, or closes before Content-Length bytes came."""
        import http.client

        import urllib3.exceptions as u3

        try:
            data = self._raw.read(amt, decode_content=False) or b""
        except (u3.HTTPError, OSError, http.client.HTTPException) as e:
            raise _transport_error(self.method, self.url, e, self.received) from None
        self.received += len(data)
        return data

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        while chunk := self.read(size):
            yield chunk

    def error(self, challenged: bool = False) -> HttpError:
        """The HttpError for this answer (with the start of its body); closes the response."""
        try:
            body = self.read(_ERROR_BODY)
        except HttpError:
            body = b""
        self.close()
        return HttpError(self.method, self.url, self.status, self.reason, body=body, headers=dict(self.headers),
                         challenged=challenged)

    def close(self) -> None:
        """Give the connection back to the pool (a short unread rest is drained first), else close it."""
        raw = self._raw
        left = getattr(raw, "length_remaining", None)
        if left is not None and left <= _ERROR_BODY:
            raw.drain_conn()
            raw.release_conn()
        raw.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpClient:
    """Connection pools (direct and through proxies) shared by threads.

    `timeout` bounds connecting and each read (None: only a request's deadline does); `retry` is the default
    RetryPolicy; `proxies` takes the environment's (http_proxy, https_proxy, no_proxy) as urllib does, except
    for the hosts in `direct`; `verify=False` skips certificate checks; `redirects=0` returns 3xx answers as
    they are.
    """

    def __init__(self, *, timeout: float | None = 30.0, retry: RetryPolicy = NO_RETRY, proxies: bool = True,
                 direct: Collection[str] = (), verify: bool = True, redirects: int = MAX_REDIRECTS,
                 user_agent: str = "workbench", maxsize: int = 8, sleep: Callable[[float], None] = time.sleep) -> None:
        self.timeout = timeout
        self.retry = retry
        self.direct = frozenset(direct)
        self.verify = verify
        self.redirects = redirects
        self.user_agent = user_agent
        self.maxsize = maxsize
        self.sleep = sleep
        self._proxies: dict[str, str] = {}
        if proxies:
            import urllib.request

            self._proxies = urllib.request.getproxies_environment()
        self._pools: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    # -- requests -------------------------------------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: Body = None,
                ok: Collection[int] = (), auth: AuthHook | None = None, deadline: float | None = None,
                retry: RetryPolicy | None = None) -> Response:
        """Send a request; returns the answer when it is 2xx or in `ok`, else raises HttpError.

        A 401 is answered once through `auth` (when the body can be sent again). Answers the retry policy
        covers are asked again; with `deadline` (time.monotonic()) no attempt starts or waits past it.
        """
        policy = self.retry if retry is None else retry
        replayable = body is None or isinstance(body, bytes)
        backoff, done, challenged = policy.backoff, 0, False
        while True:
            timeout = self.timeout
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HttpError(method, url, 0, "timed out")
                timeout = max(remaining if timeout is None else min(timeout, remaining), 0.1)
            sent = auth.authorize(url) if auth is not None else {}
            resp = self._follow(method, url, {**(headers or {})}, sent, body, timeout)
            if 200 <= resp.status < 300 or resp.status in ok:
                return resp
            if resp.status == 401 and auth is not None and not challenged and replayable:
                challenged = True
                error = resp.error()
                if auth.challenge(error, sent):
                    continue
                error.challenged = True
                raise error
            if replayable and policy.applies(method, resp.status, done):
                wait = retry_after(resp.headers.get("Retry-After"), backoff)
                backoff = min(backoff * 2, policy.max_backoff)
                status = resp.status
                resp.close()
                if deadline is not None and time.monotonic() + wait >= deadline:
                    what = "throttled" if status == 429 else "failing"
                    raise HttpError(method, url, status, resp.reason,
                                    message=f"still {what} ({status}) when the timeout ran out")
                done += 1
                self.sleep(wait)
                continue
            raise resp.error(challenged)

    def _follow(self, method: str, url: str, headers: dict[str, str], auth: dict[str, str], body: Body,
                timeout: float | None) -> Response:
        """One request and the redirects after it; `auth` headers go to the first hop only."""
        headers.setdefault("User-Agent", self.user_agent)
        first = True
        for _ in range(self.redirects + 1):
            resp = self._send(method, url, {**headers, **auth} if first else headers, body, timeout)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location or self.redirects == 0:
                return resp
            if method in ("GET", "HEAD"):
                pass
            elif method == "POST" and resp.status in (301, 302, 303):
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "content-type")}
            else:
                return resp  # urllib does not redirect other methods: the 3xx is the answer
            resp.close()
            url = urllib.parse.urljoin(url, location)
            first = False
        return resp

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body, timeout: float | None) -> Response:
        import http.client

        import urllib3

        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(method, url, 0, "unsupported URL (want http:// or https:// and a host)")
        pool = self._pool(parts)
        for attempt in (1, 2):
            try:
                raw = pool.urlopen(method, url, body=body, headers=headers, retries=False, redirect=False,
                                   timeout=urllib3.Timeout(connect=timeout, read=timeout), preload_content=False,
                                   decode_content=False)
                return Response(raw, method, url)
            except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as e:
                error = _transport_error(method, url, e)
                # a kept-alive connection the server had closed meanwhile: once more on a fresh one
                stale = isinstance(error.cause, http.client.RemoteDisconnected | BrokenPipeError)
                if not (stale and attempt == 1 and method in IDEMPOTENT and (body is None or isinstance(body, bytes))):
                    raise error from None
        raise AssertionError("unreachable")

    # -- pools --------------------------------------------------------------------------------------------------

    def _proxy(self, parts: urllib.parse.SplitResult) -> str:
        if not self._proxies or parts.hostname in self.direct:
            return ""
        import urllib.request

        host = parts.netloc.rpartition("@")[2]
        if urllib.request.proxy_bypass_environment(host, self._proxies):  # type: ignore[attr-defined]
            return ""
        proxy = self._proxies.get(parts.scheme, "")
        return proxy if not proxy or "://" in proxy else "http://" + proxy

    def _pool(self, parts: urllib.parse.SplitResult) -> urllib3.PoolManager:
        proxy = self._proxy(parts)
        with self._lock:
            pool = self._pools.get(proxy)
            if pool is None:
                pool = self._pools[proxy] = self._new_pool(proxy)
            return pool

    def _new_pool(self, proxy: str) -> urllib3.PoolManager:
        import urllib3

        kw: dict[str, object] = {"maxsize": self.maxsize}
        if not self.verify:
            # the configuration asked for it (an `insecure = true` registry): no warning for each request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            kw["cert_reqs"] = "CERT_NONE"
        if not proxy:
            return urllib3.PoolManager(**kw)  # type: ignore[arg-type]
        user = urllib.parse.urlsplit(proxy)
        if user.username is not None:
            creds = f"{urllib.parse.unquote(user.username)}:{urllib.parse.unquote(user.password or '')}"
            kw["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=creds)
            proxy = urllib.parse.urlunsplit(user._replace(netloc=user.netloc.rpartition("@")[2]))
        return urllib3.ProxyManager(proxy, **kw)  # type: ignore[arg-type]


def resumable(first: Response, reopen: Callable[[int], Response], *, size: int = -1, attempts: int = 3,
              chunk: int = CHUNK) -> Generator[bytes, None, None]:
    """The body of `first`, chunk by chunk. When the connection breaks (or the body ends before `size` bytes),
    the rest is asked for with `reopen(offset)` (a Range request, which must answer 206), up to `attempts`
    times; without a known `size` nothing is resumed. BrokenDownload when the body cannot be finished. Close
    the generator to close the response it is reading."""
    resp, offset, breaks = first, 0, 0
    try:
        while True:
            try:
                data = resp.read(chunk)
                if not data and 0 <= offset < size:
                    short = f"the download ended after {offset} of {size} bytes"
                    raise HttpError(resp.method, resp.url, 0, short, cause=ConnectionResetError(short))
            except HttpError as e:
                if e.status:
                    raise
                breaks += 1
                if breaks > attempts or size < 0:
                    raise BrokenDownload(resp.method, resp.url, e.reason, e.cause, breaks - 1, False) from None
                resp.close()
                resp = reopen(offset)
                if resp.status != 206:
                    raise BrokenDownload(resp.method, resp.url, e.reason, e.cause, breaks - 1, True) from None
                continue
            if not data:
                return
            offset += len(data)
            yield data
    finally:
        resp.close()


def range_reopen(client: HttpClient, url: str, headers: Mapping[str, str], validator: str = "",
                 **kwargs: object) -> Callable[[int], Response]:
    """A `reopen` for `resumable()`: GET `url` from an offset, with If-Range `validator` (a strong ETag or a
    Last-Modified date) so that a changed resource comes back whole (200) instead of spliced."""

    def reopen(offset: int) -> Response:
        extra = {"Range": f"bytes={offset}-"} | ({"If-Range": validator} if validator else {})
        return client.request("GET", url, headers={**headers, **extra}, **kwargs)  # type: ignore[arg-type]

    return reopen


_SHARED: dict[tuple[tuple[str, object], ...], HttpClient] = {}
_SHARED_LOCK = threading.Lock()


def shared_client(**options: object) -> HttpClient:
    """The process's one HttpClient for these constructor options (hashable values), made on first use: its
    pools are shared by every thread that asks for the same options."""
    key = tuple(sorted(options.items()))
    with _SHARED_LOCK:
        client = _SHARED.get(key)
        if client is None:
            client = _SHARED[key] = HttpClient(**options)  # type: ignore[arg-type]
        return client
