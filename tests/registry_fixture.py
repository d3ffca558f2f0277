"""A real registry for tests: Debian's docker-registry on a free 127.0.0.1 port, holding busybox:latest.

Import it into a test module with `from tests.registry_fixture import image_registry_fixture  # noqa: F401`
and ask for `image_registry` (named apart from conftest's `registry`, the shared one on 127.0.0.1:5055).
It is started once per test session, shared between modules, and stopped at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "conformance"  # busybox_image.py and ocitree.py live with the cases
MISSING = [tool for tool in ("docker-registry", "skopeo") if shutil.which(tool) is None]
if not Path("/bin/busybox").exists():
    MISSING.append("busybox-static (/bin/busybox)")
SKIP_REASON = f"needs {', '.join(MISSING)} (Debian packages docker-registry, skopeo, busybox-static)"
needs_registry = pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Registry:
    """A running registry and the busybox image pushed into it."""

    host: str  # "127.0.0.1:PORT"
    workdir: Path
    layout: Path  # the busybox OCI layout that was pushed
    busybox_digest: str  # its manifest digest

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        url = path if path.startswith("http") else f"http://{self.host}{path}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with _NO_PROXY.open(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic blob upload; returns the digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        code, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert code == 202, body
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        code, _, body = self.request("PUT", f"{location}{sep}digest={digest}", data,
                                     {"Content-Type": "application/octet-stream"})
        assert code == 201, body
        return digest

    def push_manifest(self, repo: str, ref: str, doc: dict, media_type: str) -> str:  # type: ignore[type-arg]
        """PUT a manifest or index under a tag (or its digest); returns its digest."""
        raw = json.dumps(doc).encode()
        code, _, body = self.request("PUT", f"/v2/{repo}/manifests/{ref}", raw, {"Content-Type": media_type})
        assert code == 201, body
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def layout_blob(self, digest: str) -> bytes:
        return (self.layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


_STATE: dict[str, Registry] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start() -> Registry:
    work = Path(tempfile.mkdtemp(prefix="wb-registry-"))
    port = _free_port()
    host = f"127.0.0.1:{port}"
    (work / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/data\n"
        f"http:\n  addr: {host}\n")
    log = open(work / "registry.log", "wb")  # noqa: SIM115 - lives as long as the registry
    proc = subprocess.Popen(["docker-registry", "serve", str(work / "config.yml")], stdout=log, stderr=log)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    atexit.register(stop)
    reg = Registry(host, work, work / "busybox", "")
    for _ in range(100):
        try:
            if reg.request("GET", "/v2/")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(work / 'registry.log').read_text()}")
        time.sleep(0.1)
    else:
        raise RuntimeError(f"docker-registry did not come up on {host}")
    out = subprocess.run([sys.executable, str(DATA / "busybox_image.py"), str(reg.layout)],
                         check=True, capture_output=True, text=True).stdout
    reg.busybox_digest = out.strip()
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{reg.layout}:latest",
                    f"docker://{host}/busybox:latest"], check=True, capture_output=True)
    return reg


@pytest.fixture(name="image_registry", scope="session")
def image_registry_fixture() -> Registry:
    """The shared test registry (skips the test if the tools are missing)."""
    if MISSING:
        pytest.skip(SKIP_REASON)
    if "reg" not in _STATE:
        _STATE["reg"] = _start()
    return _STATE["reg"]
