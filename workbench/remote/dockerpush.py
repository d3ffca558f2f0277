"""`push=true` on Docker 20.10: its BuildKit does not push, so the image the `moby` exporter stored is pushed
through the Docker Engine API afterwards (`POST /images/{name}/push`), as buildx's docker driver does. The
daemon streams JSON progress lines; they become one vertex, `pushing NAME`, with a status row per layer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from workbench.image.reference import DOCKER_HUB, parse_reference
from workbench.image.registry_config import docker_credentials
from workbench.progress.events import Event, VertexCompleted, VertexFailed, VertexLog, VertexStarted, VertexStatus
from workbench.remote.channel import DockerConnection


class PushError(Exception):
    """The push failed; str() is the daemon's one-line message."""


def registry_auth_header(registry: str) -> str:
    """`X-Registry-Auth`: base64url JSON of the credentials for `registry` in docker's config.json ("{}" when
    there are none: an anonymous push, which a local registry accepts)."""
    found = docker_credentials(registry)
    doc: dict[str, str] = {}
    if found is not None:
        user, secret = found
        doc = {"identitytoken": secret} if not user else {"username": user, "password": secret}
        doc["serveraddress"] = registry
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def push_lines(docker_socket: str, name: str, timeout: float = 600.0) -> Iterator[dict[str, Any]]:
    """The JSON progress lines of pushing `name` (a full reference with a tag) from the Docker at `docker_socket`."""
    ref = parse_reference(name)
    repo = f"{ref.registry}/{ref.repository}" if ref.registry != DOCKER_HUB else ref.repository
    query = urllib.parse.urlencode({"tag": ref.tag or "latest"})
    conn = DockerConnection(docker_socket, timeout)
    try:
        conn.request("POST", f"/images/{urllib.parse.quote(repo, safe='/:')}/push?{query}",
                     headers={"X-Registry-Auth": registry_auth_header(ref.registry), "Content-Length": "0"})
        answer = conn.getresponse()
        if answer.status != 200:
            body = answer.read().decode("utf-8", "replace")
            try:
                message = json.loads(body).get("message", body)
            except ValueError:
                message = body
            raise PushError(f"Docker refused to push {name}: {str(message).strip()}")
        for line in answer:
            if line.strip():
                yield json.loads(line)
    except OSError as e:
        raise PushError(f"pushing {name} through Docker at {docker_socket} failed: {e}") from None
    finally:
        conn.close()


def push_image(docker_socket: str, name: str, emit: Callable[[Event], None]) -> None:
    """Push `name`, its progress as the vertex `pushing NAME`; PushError (one line) on failure."""
    vid = "push:" + hashlib.sha256(name.encode()).hexdigest()[:16]
    vname = f"pushing {name}"
    t0 = time.time()
    emit(VertexStarted(vid, vname, ts=t0))
    try:
        for doc in push_lines(docker_socket, name):
            if doc.get("error") or doc.get("errorDetail"):
                raise PushError(f"pushing {name}: {doc.get('error') or doc['errorDetail'].get('message', '')}")
            detail = doc.get("progressDetail") or {}
            layer = doc.get("id", "")
            if layer and (detail or doc.get("status") in ("Pushed", "Layer already exists")):
                done = doc.get("status") in ("Pushed", "Layer already exists")
                emit(VertexStatus(vid, vname, status_id=f"pushing layer {layer}", current=int(detail.get("current", 0)),
                                  total=int(detail.get("total", 0)), done=done, ts=time.time()))
            elif doc.get("status") and not layer:
                emit(VertexLog(vid, vname, stream=1, data=(doc["status"] + "\n").encode(), ts=time.time()))
    except PushError as e:
        emit(VertexFailed(vid, vname, error=str(e), duration=time.time() - t0, ts=time.time()))
        raise
    emit(VertexCompleted(vid, vname, duration=time.time() - t0, ts=time.time()))
