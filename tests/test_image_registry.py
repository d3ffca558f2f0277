"""References, the content store, and pulls from a real registry (Debian's docker-registry) and a fake one."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.registry_fixture import Registry, image_registry_fixture  # noqa: F401
from workbench.image import registry_client, registry_config
from workbench.image.content import ContentStore, DigestMismatch
from workbench.image.manifests import resolve, select_platform
from workbench.image.pull import pull
from workbench.image.reference import InvalidReference, Reference, parse_reference
from workbench.image.registry_errors import RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SHA = "sha256:" + "ab" * 32


# -- references ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,host,repository,tag,digest,full", [
    ("busybox", "registry-1.docker.io", "library/busybox", "latest", None, "docker.io/library/busybox:latest"),
    ("docker.io/busybox:1.36", "registry-1.docker.io", "library/busybox", "1.36", None,
     "docker.io/library/busybox:1.36"),
    ("index.docker.io/library/busybox", "registry-1.docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest"),
    ("user/app", "registry-1.docker.io", "user/app", "latest", None, "docker.io/user/app:latest"),
    ("localhost:5055/busybox:latest", "localhost:5055", "busybox", "latest", None, "localhost:5055/busybox:latest"),
    ("localhost/busybox", "localhost", "busybox", "latest", None, "localhost/busybox:latest"),
    ("ghcr.io/a/b/c:v1.0-rc_1", "ghcr.io", "a/b/c", "v1.0-rc_1", None, "ghcr.io/a/b/c:v1.0-rc_1"),
    (f"127.0.0.1:5000/x@{SHA}", "127.0.0.1:5000", "x", None, SHA, f"127.0.0.1:5000/x@{SHA}"),
    (f"busybox:1@{SHA}", "registry-1.docker.io", "library/busybox", "1", SHA, f"docker.io/library/busybox:1@{SHA}"),
    ("[::1]:5000/img", "[::1]:5000", "img", "latest", None, "[::1]:5000/img:latest"),
])
def test_parse_reference(text: str, host: str, repository: str, tag: str | None, digest: str | None,
                         full: str) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (host, repository, tag, digest)
    assert str(ref) == full
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("Busybox", "must be lowercase"),
    ("busybox:", "invalid reference format"),
    ("bad tag!", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),
    ("busybox@sha256:" + "A" * 64, "64 lower-case hex"),
    ("ab" * 32, "64-byte hexadecimal"),
])
def test_parse_reference_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse_reference(text)
    assert issubclass(InvalidReference, ValueError)


# -- content store ------------------------------------------------------------------------------------------


def test_content_store_write_read_verify(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.write(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert store.path(digest) == tmp_path / "blobs" / "sha256" / digest[7:]
    assert store.has(digest) and store.read(digest) == b"hello"
    assert store.write(b"hello", digest) == digest
    with pytest.raises(DigestMismatch):
        store.write(b"other", digest.replace("2", "3"))
    with pytest.raises(ValueError):
        store.path("sha256:../../etc/passwd")
    with pytest.raises(FileNotFoundError, match="not in the content store"):
        store.read(SHA)


def test_content_store_streaming_writer(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b"x" * (3 << 20)
    with store.writer("sha256:" + hashlib.sha256(data).hexdigest()) as w:
        for i in range(0, len(data), 4096):
            w.write(data[i:i + 4096])
    assert w.size == len(data) and store.read(w.digest) == data
    with pytest.raises(DigestMismatch), store.writer(SHA) as w:
        w.write(b"not it")
    assert not store.has(SHA)
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"half")
        raise RuntimeError("interrupted")
    assert not store.has("sha256:" + hashlib.sha256(b"half").hexdigest())
    assert list(store.ingest.iterdir()) == []


def _write_same_blob(root: str) -> str:
    store = ContentStore(Path(root))
    with store.writer() as w:
        for _ in range(64):
            w.write(b"0123456789abcdef" * 4096)
    return w.digest


def test_content_store_concurrent_writers(tmp_path: Path) -> None:
    with ProcessPoolExecutor(4) as pool:
        digests = set(pool.map(_write_same_blob, [str(tmp_path)] * 8))
    assert len(digests) == 1
    digest = digests.pop()
    assert hashlib.sha256(ContentStore(tmp_path).read(digest)).hexdigest() == digest[7:]
    assert list((tmp_path / "ingest").iterdir()) == []


# -- platform selection, credentials -----------------------------------------------------------------------------


def test_select_platform() -> None:
    index = {"manifests": [
        {"digest": "arm", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "arm64", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "att", "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        {"digest": "amd64", "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    assert select_platform(index, "linux/amd64")["digest"] == "amd64"
    assert select_platform(index, "linux/arm64")["digest"] == "arm64"
    assert select_platform(index, "linux/aarch64")["digest"] == "arm64"
    assert select_platform(index, "linux/arm/v7")["digest"] == "arm"
    with pytest.raises(RegistryError, match=r"no image for platform linux/s390x .*linux/amd64, linux/arm/v7"):
        select_platform(index, "linux/s390x")


def test_docker_credentials(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:secret").decode()},
        "127.0.0.1:5000": {"username": "u", "password": "p"},
    }}))
    assert registry_config.docker_credentials("registry-1.docker.io", tmp_path) == ("hub", "secret")
    assert registry_config.docker_credentials("127.0.0.1:5000", tmp_path) == ("u", "p")
    assert registry_config.docker_credentials("ghcr.io", tmp_path) is None
    assert registry_config.docker_credentials("ghcr.io", tmp_path / "absent") is None


# -- the real registry ------------------------------------------------------------------------------------------


def _ref(image_registry: Registry, rest: str) -> Reference:
    return parse_reference(f"{image_registry.host}/{rest}")


def _assert_verified(store: ContentStore, digests: list[str]) -> None:
    for d in digests:
        assert store.has(d)
        assert "sha256:" + hashlib.sha256(store.path(d).read_bytes()).hexdigest() == d


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the registry client asks for."""
    seen: list[str] = []
    real = registry_client.RegistryClient.open

    def spy(self: Any, path: str, what: str, accept: str = "*/*") -> Any:
        seen.append(path)
        return real(self, path, what, accept)

    monkeypatch.setattr(registry_client.RegistryClient, "open", spy)
    return seen


def test_pull_by_tag(image_registry: Registry, tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    events: list[tuple[str, int, int]] = []
    image = pull(_ref(image_registry, "busybox"), store, progress=lambda *a: events.append(a))
    assert image.manifest_digest == image_registry.busybox_digest
    assert image.manifest["mediaType"] == OCI_MANIFEST
    assert image.config["architecture"] == "amd64" and image.config["config"]["Cmd"] == ["sh"]
    assert image.config_digest == image.manifest["config"]["digest"]
    assert image.layers == image.manifest["layers"] and len(image.layers) == 1
    _assert_verified(store, [image.manifest_digest, image.config_digest] + [x["digest"] for x in image.layers])
    layer = image.layers[0]
    assert events[-1] == (layer["digest"], layer["size"], layer["size"])
    assert str(image.reference) == f"{image_registry.host}/busybox:latest"


def test_pull_by_digest_and_second_pull_fetches_nothing(image_registry: Registry, tmp_path: Path,
                                                        requests: list[str]) -> None:
    store = ContentStore(tmp_path)
    ref = _ref(image_registry, f"busybox@{image_registry.busybox_digest}")
    image = pull(ref, store)
    assert image.manifest_digest == image_registry.busybox_digest
    assert sum(p.startswith("/blobs/") for p in requests) == 2
    requests.clear()
    again = pull(ref, store)
    assert requests == [] and again.config == image.config
    events: list[Any] = []
    pull(_ref(image_registry, "busybox:latest"), store, progress=lambda *a: events.append(a))
    assert requests == ["/manifests/latest"] and events == []


def test_resolve(image_registry: Registry) -> None:
    digest, manifest, raw = resolve(_ref(image_registry, "busybox"))
    assert digest == image_registry.busybox_digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert json.loads(raw) == manifest


def _push_arm64(image_registry: Registry, repo: str, docker: bool) -> tuple[str, str]:
    """Push an arm64 variant of busybox (same layer, another config) and busybox's amd64 manifest in the
    chosen format; returns (amd64 digest, arm64 digest)."""
    amd = json.loads(image_registry.layout_blob(image_registry.busybox_digest))
    amd_config = image_registry.layout_blob(amd["config"]["digest"])
    arm_config = json.dumps(dict(json.loads(amd_config), architecture="arm64", variant="v8")).encode()
    image_registry.push_blob(repo, image_registry.layout_blob(amd["layers"][0]["digest"]))
    digests = []
    for cfg in (amd_config, arm_config):
        m: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json" if docker
                       else "application/vnd.oci.image.config.v1+json",
                       "digest": image_registry.push_blob(repo, cfg), "size": len(cfg)},
            "layers": [dict(amd["layers"][0], mediaType="application/vnd.docker.image.rootfs.diff.tar.gzip")
                       if docker else amd["layers"][0]],
        }
        d = "sha256:" + hashlib.sha256(json.dumps(m).encode()).hexdigest()
        digests.append(image_registry.push_manifest(repo, d, m, m["mediaType"]))
    return digests[0], digests[1]


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-manifest-list"])
def test_index_picks_platform(image_registry: Registry, tmp_path: Path, docker: bool) -> None:
    repo = "multi-docker" if docker else "multi-oci"
    amd, arm = _push_arm64(image_registry, repo, docker)
    child = DOCKER_MANIFEST if docker else OCI_MANIFEST
    index = {"schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX, "manifests": [
        {"mediaType": child, "digest": arm, "size": 0,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": child, "digest": amd, "size": 0, "platform": {"architecture": "amd64", "os": "linux"}},
    ]}
    for m in index["manifests"]:  # type: ignore[attr-defined]
        m["size"] = len(image_registry.request("GET", f"/v2/{repo}/manifests/{m['digest']}",
                                         headers={"Accept": child})[2])
    index_digest = image_registry.push_manifest(repo, "latest", index, str(index["mediaType"]))

    store = ContentStore(tmp_path)
    image = pull(_ref(image_registry, repo), store)
    assert image.manifest_digest == amd and image.manifest["mediaType"] == child
    assert image.config["architecture"] == "amd64"
    assert store.has(index_digest)
    arm_image = pull(_ref(image_registry, repo), store, platform="linux/arm64")
    assert arm_image.manifest_digest == arm and arm_image.config["architecture"] == "arm64"
    assert resolve(_ref(image_registry, f"{repo}@{index_digest}"))[0] == amd
    with pytest.raises(RegistryError, match="no image for platform linux/s390x .*linux/amd64, linux/arm64/v8"):
        pull(_ref(image_registry, repo), store, platform="linux/s390x")


def test_unreachable_registry_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as info:
        resolve(parse_reference(f"localhost:{port}/nope"))
    assert time.monotonic() - t0 < 5
    assert str(info.value) == (f"cannot reach registry localhost:{port} for localhost:{port}/nope:latest: "
                               "connection refused")


def test_unknown_repository_and_tag(image_registry: Registry, tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(RegistryError, match=rf"manifest for {image_registry.host}/nope:latest from registry "
                                            rf"{image_registry.host}: 404 Not Found: .*unknown"):
        pull(_ref(image_registry, "nope"), store)
    with pytest.raises(RegistryError, match=r"busybox:no-such-tag.*404 Not Found: manifest unknown"):
        pull(_ref(image_registry, "busybox:no-such-tag"), store)


# -- a fake registry: bearer tokens, credentials, corrupt blobs -------------------------------------------------


def _tiny_image() -> dict[str, bytes]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        ti = tarfile.TarInfo("hello")
        ti.size = 2
        t.addfile(ti, io.BytesIO(b"hi"))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers",
                                 "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}).encode()

    def d(b: bytes) -> str:
        return "sha256:" + hashlib.sha256(b).hexdigest()

    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(cfg),
                                      "size": len(cfg)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": d(layer), "size": len(layer)}]}).encode()
    return {d(b): b for b in (layer, cfg, manifest)} | {"latest": manifest}


class _Fake:
    def __init__(self) -> None:
        self.blobs = _tiny_image()
        self.basic: str | None = None  # required on the token endpoint, if set
        self.corrupt = False
        self.token_requests: list[str] = []


@pytest.fixture
def fake() -> Iterator[tuple[_Fake, str]]:
    state = _Fake()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            host = f"127.0.0.1:{int(self.server.server_address[1])}"  # type: ignore[index]
            if self.path.startswith("/token"):
                state.token_requests.append(self.path)
                if state.basic and self.headers.get("Authorization") != state.basic:
                    return self._send(401, b'{"details":"bad credentials"}')
                return self._send(200, b'{"token":"t0k"}')
            if self.headers.get("Authorization") != "Bearer t0k":
                challenge = (f'Bearer realm="http://{host}/token",service="fake",'
                             f'scope="repository:tiny:pull"')
                return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                                  {"WWW-Authenticate": challenge})
            key = self.path.rsplit("/", 1)[-1]
            if key not in state.blobs:
                return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
            body = state.blobs[key]
            if state.corrupt and "/blobs/" in self.path:
                body = body[:-1] + bytes([body[-1] ^ 1])
            self._send(200, body, {"Content-Type": OCI_MANIFEST} if "/manifests/" in self.path else {})


    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bearer_token_anonymous(fake: tuple[_Fake, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, host = fake
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    image = pull(parse_reference(f"{host}/tiny"), ContentStore(tmp_path / "store"))
    assert image.config["architecture"] == "amd64"
    assert len(state.token_requests) == 1  # the token is kept for the blobs
    assert "scope=repository%3Atiny%3Apull" in state.token_requests[0] and "service=fake" in state.token_requests[0]


def test_bearer_token_with_docker_config_credentials(fake: tuple[_Fake, str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    state, host = fake
    state.basic = "Basic " + base64.b64encode(b"me:pw").decode()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(RegistryError, match=r"token endpoint .* answered 401"):
        pull(parse_reference(f"{host}/tiny"), ContentStore(tmp_path / "store"))
    (tmp_path / "config.json").write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(b"me:pw").decode()}}}))
    image = pull(parse_reference(f"{host}/tiny"), ContentStore(tmp_path / "store"))
    assert len(image.layers) == 1


def test_corrupt_blob_is_rejected(fake: tuple[_Fake, str], tmp_path: Path) -> None:
    state, host = fake
    state.corrupt = True
    store = ContentStore(tmp_path)
    with pytest.raises(RegistryError, match=r"blob sha256:\w+ of .*tiny:latest .*failed verification"):
        pull(parse_reference(f"{host}/tiny"), store)
    # only the (good) manifest got in; the corrupt config blob did not
    assert [p.name for p in store.blobs.iterdir()] == [hashlib.sha256(state.blobs["latest"]).hexdigest()]
    assert list(store.ingest.iterdir()) == []
