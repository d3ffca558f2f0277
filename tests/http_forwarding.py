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
                me.forward(self)

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


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    return h.rfile.read(int(h.headers.get("Content-Length") or 0))


def relay(h: BaseHTTPRequestHandler, upstream: str, body: bytes, headers: Mapping[str, str],
          rewrite: Callable[[str], str] = lambda loc: loc, extra: Mapping[str, str] | None = None) -> None:
    """Send `h`'s request (with `body` and `headers`) to `upstream` and its answer back to the client, the
    Location header through `rewrite`, `extra` headers added."""
    conn = http.client.HTTPConnection(upstream, timeout=60)
    conn.request(h.command, h.path, body=body if h.command not in ("GET", "HEAD") else None, headers=dict(headers))
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
