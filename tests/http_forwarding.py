"""A small forwarding HTTP server for tests that stand between a client and a real registry: every method
goes to `forward`, and `relay` passes a request upstream and its answer back."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ForwardingServer:
    """Serves on a free 127.0.0.1 port (`host`); subclasses implement `forward(handler)`."""

    def __init__(self) -> None:
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                try:
                    me.forward(self)
                except ConnectionError:  # the client went away mid-request: nothing to answer
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = handle_one  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_body(h: BaseHTTPRequestHandler, first: Callable[[], None] = lambda: None) -> bytes:
    """The request's body, by Content-Length or chunked; `first()` is called once its first bytes are in."""
    if h.headers.get("Transfer-Encoding", "").lower() != "chunked":
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(min(length, 1))
        first()
        return body + h.rfile.read(length - len(body))
    parts: list[bytes] = []
    while size := int(_line(h).split(b";")[0].strip() or b"0", 16):
        parts.append(h.rfile.read(size))
        if len(parts[-1]) < size or not _line(h):  # and the CRLF after the chunk
            raise ConnectionError("the body broke off")
        if len(parts) == 1:
            first()
    while _line(h).strip():  # trailers, up to the blank line
        pass
    if not parts:
        first()
    return b"".join(parts)


def _line(h: BaseHTTPRequestHandler) -> bytes:
    line = h.rfile.readline()
    if not line:
        raise ConnectionError("the body broke off")
    return line


def relay(h: BaseHTTPRequestHandler, upstream: str, body: bytes, headers: Mapping[str, str],
          rewrite: Callable[[str], str] = lambda loc: loc, extra: Mapping[str, str] | None = None) -> None:
    """Send `h`'s request (with `body` and `headers`) to `upstream` and its answer back to the client, the
    Location header through `rewrite`, `extra` headers added."""
    conn = http.client.HTTPConnection(upstream, timeout=60)
    headers = {k: v for k, v in headers.items() if k.lower() != "transfer-encoding"}  # the body goes whole
    conn.request(h.command, h.path, body=body if h.command not in ("GET", "HEAD") else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    h.send_response(resp.status)
    for k, v in resp.getheaders():
        if k.lower() == "location":
            v = rewrite(v)
        if k.lower() not in ("content-length", "connection", "transfer-encoding"):
            h.send_header(k, v)
    for k, v in (extra or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)
