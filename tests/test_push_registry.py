"""Push and pull against real registries: Debian's docker-registry with htpasswd basic auth, and with token auth
(a small token server here signs the JWTs with a certificate made by openssl; the registry verifies them).

Also: skopeo reads what we push and the archives we write; skopeo's copy of our docker archive into the
registry pulls back; a corrupted blob served by a proxy in front of the real registry is refused.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, real_parts_missing
from tests.registry_fixture import image_registry_fixture  # noqa: F401

HERE = Path(__file__).parent
ROOT = HERE.parent
USER, PASSWORD = "wbuser", "s3cret-pass"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("docker-registry", "skopeo", "openssl")) or not Path("/bin/busybox").exists(),
    reason="needs docker-registry, skopeo, openssl, busybox-static")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AuthRegistry:
    host: str
    work: Path
    kind: str  # "basic" or "token"

    def docker_config(self, user: str = USER, password: str = PASSWORD) -> Path:
        """A DOCKER_CONFIG directory with credentials for this registry."""
        d = Path(tempfile.mkdtemp(prefix="dockercfg-", dir=self.work))
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        (d / "config.json").write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return d


def _serve(work: Path, host: str, auth_yaml: str) -> subprocess.Popen[bytes]:
    (work / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/data\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth_yaml}")
    log = open(work / "registry.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(["docker-registry", "serve", str(work / "config.yml")], stdout=log, stderr=log)
    for _ in range(100):
        try:
            with _NO_PROXY.open(f"http://{host}/v2/", timeout=2):
                break
        except urllib.error.HTTPError:
            break  # 401: up
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((work / "registry.log").read_text()) from None
            time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    import bcrypt

    work = tmp_path_factory.mktemp("basic-registry")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (work / "htpasswd").write_text(f"{USER}:{hashed}\n")
    host = f"127.0.0.1:{_free_port()}"
    proc = _serve(work, host, f"auth:\n  htpasswd:\n    realm: wb-test\n    path: {work}/htpasswd\n")
    yield AuthRegistry(host, work, "basic")
    _stop(proc)


# -- the token server ---------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenServer(http.server.ThreadingHTTPServer):
    key: Path
    cert_der: bytes
    issued: list[list[str]]


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server: _TokenServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.end_headers()
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        scopes = query.get("scope", [])
        self.server.issued.append(scopes)
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.server.cert_der).decode()]}
        claims = {"iss": "wb-test-issuer", "sub": USER, "aud": query.get("service", [""])[0], "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.server.key)],
                             input=signing_input.encode(), capture_output=True, check=True).stdout
        body = json.dumps({"token": f"{signing_input}.{_b64url(sig)}", "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthRegistry, _TokenServer]]:
    work = tmp_path_factory.mktemp("token-registry")
    key, cert = work / "key.pem", work / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=wb-test-token-issuer"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    server = _TokenServer(("127.0.0.1", 0), _TokenHandler)
    server.key, server.cert_der, server.issued = key, der, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    host = f"127.0.0.1:{_free_port()}"
    proc = _serve(work, host, f"auth:\n  token:\n    realm: {realm}\n    service: wb-test-registry\n"
                              f"    issuer: wb-test-issuer\n    rootcertbundle: {cert}\n")
    yield AuthRegistry(host, work, "token"), server
    _stop(proc)
    server.shutdown()


# -- helpers ----------------------------------------------------------------------------------------------------


def image_cmd(*args: str, root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + ["image", *args, "--root", str(root)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "WORKBENCH_SERVER": "0", **(env or {})})


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rootfs") / "busybox-rootfs.tar"
    subprocess.run(["sh", str(ROOT / "scripts" / "busybox-rootfs.sh"), str(out)], check=True)
    return out


def _imported(root: Path, rootfs: Path, name: str) -> str:
    proc = image_cmd("import", "-c", "CMD [\"sh\"]", str(rootfs), name, root=root)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _round_trip(reg: AuthRegistry, tmp_path: Path, rootfs: Path) -> None:
    """Push from one root, pull into a fresh one (nothing local), identical digests and blobs."""
    env = {"DOCKER_CONFIG": str(reg.docker_config())}
    first, second = tmp_path / "a", tmp_path / "b"
    name = f"{reg.host}/team/busybox:{reg.kind}"
    digest = _imported(first, rootfs, name)
    proc = image_cmd("push", name, root=first, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"digest: {digest}" in proc.stdout
    pushed = sorted(p.name for p in (first / "content" / "blobs" / "sha256").iterdir())
    # delete it locally: the name, then its blobs
    assert image_cmd("rm", name, root=first).returncode == 0
    prune = subprocess.run(WORKBENCH + ["prune", "--all", "--root", str(first)], capture_output=True, text=True)
    assert prune.returncode == 0, prune.stderr
    assert list((first / "content" / "blobs" / "sha256").iterdir()) == []
    for root in (first, second):  # pull it back, and into a fresh root
        proc = image_cmd("pull", name, root=root, env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"Digest: {digest}" in proc.stdout
        blobs = root / "content" / "blobs" / "sha256"
        assert sorted(p.name for p in blobs.iterdir()) == pushed
        for p in blobs.iterdir():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    ls = image_cmd("ls", "--digests", root=second)
    assert f"{reg.host}/team/busybox" in ls.stdout and digest in ls.stdout

    # wrong credentials: a clear error, nothing pulled
    bad = {"DOCKER_CONFIG": str(reg.docker_config(password="wrong"))}
    proc = image_cmd("pull", name, root=tmp_path / "c", env=bad)
    assert proc.returncode == 1
    assert reg.host in proc.stderr and "401" in proc.stderr and "wrong" in proc.stderr, proc.stderr
    assert not (tmp_path / "c" / "images.json").exists()
    proc = image_cmd("push", name, root=second, env=bad)
    assert proc.returncode == 1 and reg.host in proc.stderr and "wrong" in proc.stderr, proc.stderr
    # skopeo accepts what we pushed
    sk = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}",
                         f"docker://{name}"], capture_output=True, timeout=60)
    assert sk.returncode == 0, sk.stderr
    assert "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest


def test_basic_auth_push_pull_round_trip(basic_registry: AuthRegistry, tmp_path: Path, rootfs: Path) -> None:
    _round_trip(basic_registry, tmp_path, rootfs)


def test_token_auth_push_pull_round_trip(token_registry: tuple[AuthRegistry, _TokenServer], tmp_path: Path,
                                         rootfs: Path) -> None:
    reg, server = token_registry
    _round_trip(reg, tmp_path, rootfs)
    assert ["repository:team/busybox:pull,push"] in server.issued  # the push asked for push access


def test_blob_upload_library_mount_and_chunks(token_registry: tuple[AuthRegistry, _TokenServer], tmp_path: Path,
                                              rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The functions the registry cache reuses: mount from another repository, chunked and monolithic upload."""
    from workbench.image.content import ContentStore
    from workbench.image.manifests import fetch_manifest
    from workbench.image.pull import fetch_blob
    from workbench.image.push import blob_exists, push_image, upload_blob
    from workbench.image.reference import parse_reference
    from workbench.image.registry_client import pull_client, push_client

    reg, server = token_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(reg.docker_config()))
    store = ContentStore(tmp_path / "content")
    data = os.urandom(300_000)
    digest = store.write(data)
    client = push_client(parse_reference(f"{reg.host}/lib/chunked"))
    assert not blob_exists(client, digest)
    assert upload_blob(client, digest, len(data), store.path(digest), chunk_size=64 << 10) == "uploaded"
    assert blob_exists(client, digest)
    assert upload_blob(client, digest, len(data), store.path(digest)) == "exists"
    mount = push_client(parse_reference(f"{reg.host}/lib/mounted"), ("lib/chunked",))
    assert upload_blob(mount, digest, len(data), store.path(digest), ("lib/chunked",)) == "mounted"
    assert ["repository:lib/mounted:pull,push", "repository:lib/chunked:pull"] in server.issued
    with _NO_PROXY.open(urllib.request.Request(f"http://{reg.host}/v2/lib/mounted/blobs/{digest}",
                                               headers={"Authorization": mount.authorization or ""})) as resp:
        assert resp.read() == data

    # push_image mounts what an earlier push of the same registry holds (no upload of those blobs again)
    first = tmp_path / "root"
    image = _imported(first, rootfs, f"{reg.host}/lib/one:1")
    events: list[tuple[str, int, int]] = []
    assert push_image(parse_reference(f"{reg.host}/lib/one:1"), ContentStore(first / "content"), image) == image
    server.issued.clear()
    push_image(parse_reference(f"{reg.host}/lib/two:1"), ContentStore(first / "content"), image,
               progress=lambda d, c, t: events.append((d, c, t)))
    assert ["repository:lib/two:pull,push", "repository:lib/one:pull"] in server.issued
    assert events and all(c == t for _, c, t in events)  # mounted: no partial byte progress

    # and the read side: a manifest and a blob by digest into a fresh store, verified
    reader = pull_client(parse_reference(f"{reg.host}/lib/two:1"))
    fresh = ContentStore(tmp_path / "fresh")
    got, raw, doc = fetch_manifest(reader, "1", fresh)
    assert got == image and fresh.has(image)
    fetch_blob(reader, doc["config"]["digest"], doc["config"]["size"], fresh)
    assert fresh.read(doc["config"]["digest"]) == ContentStore(first / "content").read(doc["config"]["digest"])


def test_skopeo_reads_our_archives_and_copies_docker_archive(
        basic_registry: AuthRegistry, tmp_path: Path, rootfs: Path) -> None:
    reg = basic_registry
    root = tmp_path / "root"
    digest = _imported(root, rootfs, "wb-archive-test:1")
    docker_tar, oci_tar = tmp_path / "d.tar", tmp_path / "o.tar"
    assert image_cmd("save", "-o", str(docker_tar), "wb-archive-test:1", root=root).returncode == 0
    sk = subprocess.run(["skopeo", "inspect", "--raw", f"docker-archive:{docker_tar}"], capture_output=True)
    assert sk.returncode == 0, sk.stderr
    assert json.loads(sk.stdout)["config"]["digest"] == json.loads(
        (root / "content" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())["config"]["digest"]
    from workbench.image.content import ContentStore
    from workbench.image.oci_layout import write_oci_archive

    write_oci_archive(oci_tar, ContentStore(root / "content"), digest, "1")
    sk = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{oci_tar}"], capture_output=True)
    assert sk.returncode == 0 and "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest, sk.stderr
    target = f"{reg.host}/copied/busybox:1"
    cp = subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
                         f"docker-archive:{docker_tar}", f"docker://{target}"], capture_output=True, text=True,
                        timeout=120)
    assert cp.returncode == 0, cp.stderr
    env = {"DOCKER_CONFIG": str(reg.docker_config())}
    proc = image_cmd("pull", target, root=tmp_path / "fresh", env=env)
    assert proc.returncode == 0, proc.stderr
    # the loaded-back image runs the same config
    again = image_cmd("load", "-i", str(docker_tar), root=tmp_path / "loaded")
    assert again.returncode == 0 and "Loaded image: wb-archive-test:1" in again.stdout, again.stderr


# -- a corrupting proxy in front of the real registry ---------------------------------------------------------------


class _Proxy(http.server.ThreadingHTTPServer):
    upstream: str
    corrupt: str = ""  # the blob digest whose bytes are altered
    truncate: str = ""  # the blob digest whose first download breaks off half-way
    ranges: list[str]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        req = urllib.request.Request(f"http://{self.server.upstream}{self.path}", method=self.command,
                                     headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        try:
            resp = _NO_PROXY.open(req, timeout=10)
        except urllib.error.HTTPError as e:
            resp = e
        body = resp.read()
        if self.server.corrupt and self.path.endswith(f"/blobs/{self.server.corrupt}") and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if self.headers.get("Range"):
            self.server.ranges.append(self.headers["Range"])
        cut = (self.server.truncate and self.path.endswith(f"/blobs/{self.server.truncate}")
               and self.command == "GET" and not self.headers.get("Range"))
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
            self.server.truncate = ""
        elif self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _forward  # noqa: N815 - http.server's names


def test_corrupted_blob_is_refused(image_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads(image_registry.layout_blob(image_registry.busybox_digest))
    layer = manifest["layers"][0]["digest"]
    proxy = _Proxy(("127.0.0.1", 0), _ProxyHandler)
    proxy.upstream, proxy.corrupt, proxy.ranges = image_registry.host, layer, []
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{proxy.server_address[1]}"
        root = tmp_path / "root"
        proc = image_cmd("pull", f"{host}/busybox:latest", root=root)
        assert proc.returncode == 1
        assert layer in proc.stderr and host in proc.stderr and "failed verification" in proc.stderr, proc.stderr
        assert not (root / "content" / "blobs" / "sha256" / layer.split(":")[1]).exists()
        assert list((root / "content" / "ingest").iterdir()) == []
        assert image_cmd("ls", "-q", root=root).stdout == ""
    finally:
        proxy.shutdown()


def test_build_pushes_with_metadata_and_local_base(token_registry: tuple[AuthRegistry, _TokenServer],
                                                   tmp_path: Path, rootfs: Path) -> None:
    """A real build on an imported base (no registry for FROM), `-t` + push=true, metadata like buildctl."""
    if real_parts_missing():
        pytest.skip(real_parts_missing())
    reg, _ = token_registry
    root = tmp_path / "root"
    _imported(root, rootfs, "busybox-static")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox-static\nRUN echo built > /built\n")
    name = f"{reg.host}/built/app:1"
    meta = tmp_path / "meta.json"
    env = {**os.environ, "WORKBENCH_SERVER": "0", "DOCKER_CONFIG": str(reg.docker_config())}
    proc = subprocess.run(WORKBENCH + ["build", str(ctx), "--root", str(root), "--progress", "plain",
                                       "-t", f"{reg.host}/built/app:dev",
                                       "--output", f"type=image,name={name},push=true",
                                       "--output", f"type=tar,dest={tmp_path}/fs.tar",
                                       "--output", f"type=docker,dest={tmp_path}/d.tar,name=app:dev",
                                       "--output", f"type=oci,dest={tmp_path}/o.tar",
                                       "--metadata-file", str(meta)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "load metadata for" not in proc.stderr  # the base came from the local store
    assert f"pushing {name}" in proc.stderr and f"pushing {reg.host}/built/app:dev" in proc.stderr
    data = json.loads(meta.read_text())
    digest = data["containerimage.digest"]
    assert data["image.name"] == f"{name},{reg.host}/built/app:dev,docker.io/library/app:dev"
    assert data["containerimage.descriptor"]["digest"] == digest
    raw = (root / "content" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert data["containerimage.descriptor"]["size"] == len(raw)
    assert json.loads(raw)["config"]["digest"] == data["containerimage.config.digest"]
    ls = image_cmd("ls", "--digests", root=root).stdout
    assert f"{reg.host}/built/app" in ls and digest in ls
    with tarfile.open(tmp_path / "fs.tar") as t:
        assert t.extractfile("./built").read() == b"built\n"  # type: ignore[union-attr]
        assert t.getmember("./bin/sh").issym()
    sk = subprocess.run(["skopeo", "inspect", "--raw", f"docker-archive:{tmp_path}/d.tar"], capture_output=True)
    assert sk.returncode == 0, sk.stderr
    assert json.loads(sk.stdout)["config"]["digest"] == data["containerimage.config.digest"]
    sk = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{tmp_path}/o.tar"], capture_output=True)
    assert sk.returncode == 0 and "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest, sk.stderr
    # a locally built image is a base for the next build, without asking the registry
    (ctx / "Dockerfile").write_text(f"FROM {reg.host}/built/app:dev\nRUN cat /built > /again\n")
    env_no_creds = {**env, "DOCKER_CONFIG": str(tmp_path / "no-credentials")}
    again = subprocess.run(WORKBENCH + ["build", str(ctx), "--root", str(root), "--progress", "plain", "--output",
                                        f"type=local,dest={tmp_path}/out"], capture_output=True, text=True,
                           env=env_no_creds, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"FROM {reg.host}/built/app:dev@{digest}" in again.stderr and "load metadata" not in again.stderr
    assert (tmp_path / "out" / "again").read_text() == "built\n"
    pulled = image_cmd("pull", f"{reg.host}/built/app:dev", root=tmp_path / "fresh",
                       env={"DOCKER_CONFIG": env["DOCKER_CONFIG"]})
    assert pulled.returncode == 0 and f"Digest: {digest}" in pulled.stdout, pulled.stderr


def test_zstd_and_uncompressed_layers_pull_in_parallel_and_build(image_registry, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  rootfs: Path) -> None:
    """An image with a gzip, a zstd and an uncompressed layer: pushed, pulled with byte progress for each layer
    (in parallel), and used as a build's base, whose RUN sees every layer's files."""
    import zstandard

    from workbench.image.config import build_manifest
    from workbench.image.content import ContentStore
    from workbench.image.pull import pull
    from workbench.image.push import push_image
    from workbench.image.reference import parse_reference

    root = tmp_path / "root"
    base = _imported(root, rootfs, "busybox-static")
    store = ContentStore(root / "content")
    manifest = json.loads(store.read(base))
    config = json.loads(store.read(manifest["config"]["digest"]))
    layers = list(manifest["layers"])
    for name, kind in (("zstd-file", "zstd"), ("plain-file", "none")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            ti = tarfile.TarInfo(name)
            ti.size = len(kind) + 1
            t.addfile(ti, io.BytesIO(kind.encode() + b"\n"))
        tar = buf.getvalue()
        blob = zstandard.ZstdCompressor().compress(tar) if kind == "zstd" else tar
        media = "application/vnd.oci.image.layer.v1.tar" + ("+zstd" if kind == "zstd" else "")
        layers.append({"mediaType": media, "digest": store.write(blob), "size": len(blob)})
        config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(tar).hexdigest())
    digest = build_manifest(store, config, layers)
    ref = parse_reference(f"{image_registry.host}/mixed:1")
    assert push_image(ref, store, digest) == digest

    events: list[tuple[str, int, int]] = []
    pulled = pull(ref, ContentStore(tmp_path / "fresh"), progress=lambda d, c, t: events.append((d, c, t)))
    assert pulled.manifest_digest == digest
    for layer in layers:
        mine = [(c, t) for d, c, t in events if d == layer["digest"]]
        assert mine[0] == (0, layer["size"]) and mine[-1] == (layer["size"], layer["size"])

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN cat /zstd-file /plain-file > /both\n")
    proc = subprocess.run(WORKBENCH + ["build", str(ctx), "--root", str(tmp_path / "root2"), "--progress", "plain",
                                       "--output", f"type=local,dest={tmp_path}/out"], capture_output=True,
                          text=True, env={**os.environ, "WORKBENCH_SERVER": "0"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "both").read_text() == "zstd\nnone\n"


def test_broken_download_resumes_with_range(image_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads(image_registry.layout_blob(image_registry.busybox_digest))
    layer = manifest["layers"][0]
    proxy = _Proxy(("127.0.0.1", 0), _ProxyHandler)
    proxy.upstream, proxy.truncate, proxy.ranges = image_registry.host, layer["digest"], []
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        root = tmp_path / "root"
        proc = image_cmd("pull", f"127.0.0.1:{proxy.server_address[1]}/busybox:latest", root=root)
        assert proc.returncode == 0, proc.stderr
        assert proxy.ranges == [f"bytes={layer['size'] // 2}-"]
        blob = (root / "content" / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    finally:
        proxy.shutdown()
