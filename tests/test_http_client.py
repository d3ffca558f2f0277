"""workbench.http: retries and deadlines, the auth hook (first hop only), Range resume, errors, lazy import."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from workbench.http.client import HttpClient, range_reopen, resumable
from workbench.http.errors import BrokenDownload, HttpError
from workbench.http.retry import RetryPolicy

BODY = bytes(range(256)) * 400


class _State:
    def __init__(self) -> None:
        self.throttle = 0
        self.retry_after = "0"
        self.cut = False  # the next full GET of /body breaks off half-way
        self.seen: list[tuple[str, str, dict[str, str]]] = []


@pytest.fixture
def server() -> Iterator[tuple[_State, str]]:
    state = _State()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
                  length: int | None = None) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            state.seen.append((self.command, self.path, dict(self.headers.items())))
            if self.path.split("?")[0] == "/throttled" and state.throttle:
                state.throttle -= 1
                return self._send(429, b"slow down", {"Retry-After": state.retry_after})
            if self.path == "/private":
                if self.headers.get("Authorization") != "Bearer ok":
                    return self._send(401, b"no", {"WWW-Authenticate": 'Bearer realm="x"'})
                return self._send(307, headers={"Location": "/storage"})
            if self.path == "/body":
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].rstrip("-"))
                    return self._send(206, BODY[start:], {"ETag": '"v1"'})
                if state.cut:
                    state.cut = False
                    self._send(200, BODY[:1000], {"ETag": '"v1"'}, length=len(BODY))
                    self.close_connection = True
                    return
                return self._send(200, BODY, {"ETag": '"v1"'})
            self._send(200, b"ok")

        do_POST = do_GET  # noqa: N815

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_throttled_requests_are_retried_until_the_deadline(server: tuple[_State, str]) -> None:
    state, base = server
    policy = RetryPolicy(statuses=frozenset({429}), methods=None, retries=None, backoff=0.01)
    client = HttpClient(retry=policy, proxies=False)
    state.throttle = 2
    with client.request("POST", base + "/throttled", body=b"x", deadline=time.monotonic() + 10) as resp:
        assert resp.status == 200 and resp.read() == b"ok"
    assert sum(p == "/throttled" for _, p, _ in state.seen) == 3
    state.throttle, state.retry_after = 1000, "5"
    with pytest.raises(HttpError, match=r"still throttled \(429\) when the timeout ran out") as e:
        client.request("GET", base + "/throttled", deadline=time.monotonic() + 1)
    assert e.value.status == 429


def test_no_retry_by_default_and_errors_keep_status_and_body(server: tuple[_State, str]) -> None:
    state, base = server
    state.throttle = 1
    with pytest.raises(HttpError) as e:
        HttpClient(proxies=False).request("GET", base.replace("://", "://me:secret@") + "/throttled?sig=x")
    assert e.value.status == 429 and e.value.body == b"slow down"
    assert "secret" not in str(e.value) and "sig=x" not in str(e.value) and "me:xxxxx@" in str(e.value)


def test_auth_hook_answers_a_challenge_and_is_not_sent_to_a_redirect_target(server: tuple[_State, str]) -> None:
    state, base = server

    class Hook:
        token = ""
        challenges = 0

        def authorize(self, url: str) -> dict[str, str]:
            return {"Authorization": self.token} if self.token else {}

        def challenge(self, error: HttpError, sent: Mapping[str, str]) -> bool:
            assert error.status == 401 and error.headers["www-authenticate"] == 'Bearer realm="x"'
            self.challenges += 1
            self.token = "Bearer ok"
            return True

    hook = Hook()
    with HttpClient(proxies=False).request("GET", base + "/private", auth=hook) as resp:
        assert resp.read() == b"ok" and resp.url.endswith("/storage")
    assert hook.challenges == 1
    storage = [h for _, p, h in state.seen if p == "/storage"]
    assert storage and "Authorization" not in storage[0]


def test_a_broken_body_is_resumed_with_a_range_request(server: tuple[_State, str]) -> None:
    state, base = server
    client = HttpClient(proxies=False)
    state.cut = True
    resp = client.request("GET", base + "/body")
    body = resumable(resp, range_reopen(client, resp.url, {}, '"v1"'), size=len(BODY), chunk=4096)
    assert b"".join(body) == BODY
    ranged = [h for _, p, h in state.seen if p == "/body" and "Range" in h]
    assert ranged[0]["Range"] == "bytes=1000-" and ranged[0]["If-Range"] == '"v1"'
    state.cut = True
    with pytest.raises(BrokenDownload, match="connection closed after 1000 bytes") as e:
        b"".join(resumable(client.request("GET", base + "/body"), range_reopen(client, base + "/body", {})))
    assert e.value.resumptions == 0  # no known size: nothing to resume against


def test_unreachable_is_an_error_with_the_socket_error_as_cause() -> None:
    with pytest.raises(HttpError, match=r"GET http://127.0.0.1:9/x: .*Connection refused") as e:
        HttpClient(proxies=False).request("GET", "http://127.0.0.1:9/x")
    assert e.value.status == 0 and isinstance(e.value.cause, ConnectionRefusedError)


def test_importing_the_layer_does_not_import_urllib3() -> None:
    code = ("import sys, workbench.http.client, workbench.image.pull, workbench.image.push; "
            "print('urllib3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
