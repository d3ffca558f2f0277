"""The registry's credentials go to its origin only: an upload `Location` on another host (blob storage) never
sees the Authorization header, while the registry (htpasswd basic auth, a real docker-registry) still works.

The client talks to a front proxy (the "registry") that points the upload Locations at a second server, the
"blob storage"; that one records what it gets and passes the request on to the registry with credentials of
its own, as a signed URL would be honoured.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.http_forwarding import ForwardingServer, read_body, relay
from tests.test_push_registry import PASSWORD, USER, AuthRegistry, basic_registry  # noqa: F401
from tests.test_push_registry import pytestmark as _needs_registry

pytestmark = _needs_registry
_BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


class Forwarder(ForwardingServer):
    """Forwards every request to `upstream`, recording (method, path, Authorization or None); `rewrite` maps the
    answer's Location; `authorization`, when set, replaces the request's."""

    def __init__(self, upstream: str, rewrite: Callable[[str], str] = lambda loc: loc,
                 authorization: str | None = None) -> None:
        super().__init__()
        self.upstream, self.rewrite, self.authorization = upstream, rewrite, authorization
        self.seen: list[tuple[str, str, str | None]] = []

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        body = read_body(h)
        self.seen.append((h.command, h.path, h.headers.get("Authorization")))
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("connection", "authorization")}
        if self.authorization or h.headers.get("Authorization"):
            headers["Authorization"] = self.authorization or h.headers["Authorization"]
        relay(h, self.upstream, body, headers, rewrite=self.rewrite)


@pytest.fixture
def storage_and_front(basic_registry: AuthRegistry) -> Iterator[tuple[Forwarder, Forwarder]]:  # noqa: F811
    storage = Forwarder(basic_registry.host, authorization=_BASIC)  # the "signed URL" is good on its own
    front = Forwarder(basic_registry.host)

    def to_storage(location: str) -> str:
        if "/blobs/uploads/" not in location:
            return location
        path = location.split(front.host, 1)[1] if front.host in location else location
        return f"http://{storage.host}{path}"

    front.rewrite = to_storage
    yield storage, front
    storage.close()
    front.close()


def test_upload_location_on_another_host_gets_no_credentials(
        storage_and_front: tuple[Forwarder, Forwarder], basic_registry: AuthRegistry,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.image.push import upload_blob
    from workbench.image.reference import parse_reference
    from workbench.image.registry_client import push_client
    from workbench.image.upload import StreamingUpload

    storage, front = storage_and_front
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {front.host: {"auth": _BASIC.split()[1]}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    client = push_client(parse_reference(f"{front.host}/origin/test:1"))

    blob = os.urandom(3 << 20)
    path = tmp_path / "blob"
    path.write_bytes(blob)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    upload_blob(client, digest, len(blob), path)  # monolithic: POST, then PUT to the Location

    streamed = os.urandom(5 << 20)
    upload = StreamingUpload(client, "layer origin")  # POST, PATCHes to the Location, PUT
    upload.write(streamed)
    assert upload.finish("sha256:" + hashlib.sha256(streamed).hexdigest()), upload.error

    assert {m for m, _, _ in storage.seen} >= {"PUT", "PATCH"}, storage.seen  # the uploads went there
    assert [(m, p) for m, p, auth in storage.seen if auth] == []  # and never with the registry's credentials
    assert any(auth == _BASIC for m, _, auth in front.seen if m == "POST")  # the registry got them
    registry = Forwarder(basic_registry.host, authorization=_BASIC)
    try:
        for data in (blob, streamed):
            conn = http.client.HTTPConnection(registry.host, timeout=30)
            conn.request("GET", f"/v2/origin/test/blobs/sha256:{hashlib.sha256(data).hexdigest()}")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == data
            conn.close()
    finally:
        registry.close()
