"""A pushed build uploads its new layers while they are compressed (issue 19), through a recording proxy in front
of a real registry; a registry that refuses chunked uploads still gets the image, from the content store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.http_forwarding import ForwardingServer, read_body, relay
from tests.registry_fixture import Registry, image_registry_fixture  # noqa: F401
from workbench.image import upload as upload_module

WORKBENCH = [str(Path(sys.executable).parent / "workbench")]
LAYER_MB = 40  # random bytes: stored, not deflated, so the layer is as big as this


class RecordingProxy(ForwardingServer):
    """Forwards every request to the registry (Host kept, so its Locations point back here) and records
    (method, path, Content-Range or Transfer-Encoding, whether `ingest` held a blob being written when the
    first body bytes came in); can refuse PATCH (405, after reading the body)."""

    def __init__(self, upstream: str, ingest: Path) -> None:
        super().__init__()
        self.upstream, self.ingest = upstream, ingest
        self.log: list[tuple[str, str, str, bool]] = []
        self.refuse_patch = False
        self.hold_first_patch = 0.3  # seconds before reading the body: the writer must stall meanwhile

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        if h.command == "PATCH" and not any(m == "PATCH" for m, *_ in self.log):
            time.sleep(self.hold_first_patch)
        busy: list[bool] = []
        body = read_body(h, lambda: busy.append(self.ingest.is_dir() and any(self.ingest.iterdir())))
        framing = h.headers.get("Content-Range") or h.headers.get("Transfer-Encoding", "")
        self.log.append((h.command, h.path, framing, bool(busy and busy[0])))
        if h.command == "PATCH" and self.refuse_patch:
            h.send_response(405)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        relay(h, self.upstream, body, {k: v for k, v in h.headers.items() if k.lower() != "connection"})


@pytest.fixture
def proxy(image_registry: Registry, tmp_path: Path) -> Iterator[RecordingProxy]:
    p = RecordingProxy(image_registry.host, tmp_path / "root" / "content" / "ingest")
    yield p
    p.close()


def _build_and_push(tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "big.bin").write_bytes(os.urandom(LAYER_MB << 20))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /big.bin\n")
    env = {**os.environ, "WORKBENCH_SERVER": "0"}
    return subprocess.run(WORKBENCH + ["build", str(ctx), "--root", str(tmp_path / "root"), "--progress", "plain",
                                       "--output", f"type=image,name={name},push=true"],
                          capture_output=True, text=True, env=env, timeout=300)


def _layer_digest(root: Path, host: str, repo: str) -> str:
    from workbench.image.store import ImageStore
    from workbench.worker import Worker

    worker = Worker(root)
    try:
        manifest = json.loads(worker.content.read(ImageStore.for_content(worker.content).resolve(
            f"{host}/{repo}:1").digest))
        return str(manifest["layers"][0]["digest"])
    finally:
        worker.close()


def _pulled_layer(tmp_path: Path, name: str, digest: str) -> bytes:
    fresh = tmp_path / "fresh"
    proc = subprocess.run(WORKBENCH + ["image", "pull", "--root", str(fresh), name], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return (fresh / "content" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def test_new_layers_upload_while_they_are_compressed(proxy: RecordingProxy, tmp_path: Path) -> None:
    name = f"{proxy.host}/streamed:1"
    proc = _build_and_push(tmp_path, name)
    assert proc.returncode == 0, proc.stderr
    digest = _layer_digest(tmp_path / "root", proxy.host, "streamed")
    local = (tmp_path / "root" / "content" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    patches = [(framing, busy) for method, _, framing, busy in proxy.log if method == "PATCH"]
    assert patches == [("chunked", True)], "one streamed PATCH, begun before the layer blob was written in full"
    layer_puts = [path for method, path, *_ in proxy.log
                  if method == "PUT" and f"digest={digest.replace(':', '%3A')}" in path]
    assert len(layer_puts) == 1  # the stream's: the push found the layer there
    assert [m for m, *_ in proxy.log].count("POST") == 2  # the layer's upload and the config's
    assert _pulled_layer(tmp_path, name, digest) == local
    assert "sha256:" + hashlib.sha256(local).hexdigest() == digest


def test_registry_refusing_chunks_still_gets_the_image(proxy: RecordingProxy, tmp_path: Path) -> None:
    proxy.refuse_patch = True
    name = f"{proxy.host}/monolithic:1"
    proc = _build_and_push(tmp_path, name)
    assert proc.returncode == 0, proc.stderr
    digest = _layer_digest(tmp_path / "root", proxy.host, "monolithic")
    methods = [m for m, path, *_ in proxy.log if "/blobs/uploads/" in path]
    assert methods[:3] == ["POST", "PATCH", "DELETE"]  # the refused stream is cancelled at the registry
    assert "(not streamed: 405 Method Not Allowed)" in proc.stderr + proc.stdout  # the layer's row says why
    puts = [path for m, path, *_ in proxy.log if m == "PUT" and "/blobs/uploads/" in path]
    assert any(f"digest={digest.replace(':', '%3A')}" in p for p in puts)  # then uploaded from the store
    local = (tmp_path / "root" / "content" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert _pulled_layer(tmp_path, name, digest) == local


def _client(host: str, repo: str) -> Any:
    from workbench.image.reference import parse_reference
    from workbench.image.registry_client import push_client

    return push_client(parse_reference(f"{host}/{repo}:1"))


def _stream(upload: upload_module.StreamingUpload, data: bytes, step: int = 1 << 20) -> bool:
    for at in range(0, len(data), step):
        upload.write(data[at:at + step])
    return upload.finish("sha256:" + hashlib.sha256(data).hexdigest())


def _patches(proxy: RecordingProxy) -> list[str]:
    return [framing for method, _, framing, _ in proxy.log if method == "PATCH"]


@pytest.mark.parametrize("size", [0, 1, upload_module.PIECE, 3 * upload_module.PIECE + 7])
def test_blob_goes_whole_in_one_streamed_patch(proxy: RecordingProxy, image_registry: Registry, size: int) -> None:
    """Any size, empty and exact multiples of a piece included: one chunked PATCH, and the registry holds
    exactly the bytes written."""
    data = os.urandom(size)
    upload = upload_module.StreamingUpload(_client(proxy.host, "whole"), "layer whole")
    assert _stream(upload, data, step=upload_module.PIECE // 3 + 1), upload.error
    assert _patches(proxy) == ["chunked"]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    code, _, body = image_registry.request("GET", f"/v2/whole/blobs/{digest}")
    assert code == 200 and body == data


def test_abandoned_stream_breaks_off_and_is_cancelled(proxy: RecordingProxy, image_registry: Registry) -> None:
    """abort() in the middle: the PATCH is broken off (never ended as a short blob) and the upload deleted."""
    proxy.hold_first_patch = 0
    upload = upload_module.StreamingUpload(_client(proxy.host, "abandoned"), "layer abandoned")
    location = upload.location
    upload.write(os.urandom(2 * upload_module.PIECE))
    upload.abort()
    assert upload.broken and not upload.sender.is_alive()
    assert [m for m, *_ in proxy.log] == ["POST", "DELETE"]  # the PATCH never completed, so it was not relayed
    path = location.split(proxy.host, 1)[1]
    code, _, _ = image_registry.request("GET", path)
    assert code == 404  # the registry dropped the upload


def test_fallback_ends_the_layer_row_with_why(proxy: RecordingProxy) -> None:
    rows: list[tuple[str, int, int]] = []
    proxy.refuse_patch = True
    data = os.urandom(upload_module.PIECE + 10)
    upload = upload_module.StreamingUpload(_client(proxy.host, "refused"), "layer abc",
                                           lambda label, cur, total: rows.append((label, cur, total)))
    assert not _stream(upload, data)
    # the refusal came after the body: the row of the bytes sent ends, then the reason follows
    assert rows[-2:] == [("layer abc", len(data), len(data)),
                         ("layer abc (not streamed: 405 Method Not Allowed)", len(data), len(data))]


def test_fallback_reason_has_no_credentials() -> None:
    from workbench.image.registry_errors import RegistryError

    error = RegistryError("pushing layer abc while it is compressed for r.example/a:1 from registry r.example: "
                          "cannot reach https://user:hunter2@blobs.example/up/1?X-Amz-Signature=s3cr3t&x=1 "
                          "(Authorization: Bearer eyJhbGciOi.s3cr3t) or Basic dXNlcjpodW50ZXIy")
    why = upload_module.short_reason(error, "r.example")
    assert why.startswith("cannot reach https://blobs.example/")
    for secret in ("hunter2", "s3cr3t", "user:", "dXNlcjpodW50ZXIy", "eyJhbGciOi"):
        assert secret not in why, why
