"""`workbench builders` and the Control client on real engines: Docker 20.10's dockerd (BuildKit v0.8, no Info
call, reached through the /grpc upgrade relay), /tmp/bk's buildkitd v0.20 when it runs, and addresses where
nothing answers (each a one-line error naming the address or the flag)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import buildkitd_addr
from workbench.cli import main


def builders(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["builders", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert err.startswith("ERROR: ") and err.endswith("\n") and err.count("\n") == 1, err
    return err


@pytest.fixture(autouse=True)
def no_buildkit_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKIT_HOST", raising=False)


# -- Docker 20.10 ------------------------------------------------------------------------------------------------

def test_builders_on_docker_20_10(docker_daemon: DockerDaemon, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, out, err = builders(capsys, "--addr", docker_daemon.addr)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Address:\t{docker_daemon.addr}"
    assert lines[1] == f"BuildKit:\tv0.8-era, from Docker {docker_daemon.version}"
    assert "Worker:\t\tmoby" in lines
    platforms = next(line for line in lines if line.startswith("Platforms:"))
    assert "linux/amd64" in platforms.split("\t")[1].split(", ")


def test_builders_json_on_docker_20_10(docker_daemon: DockerDaemon,  # noqa: F811
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = builders(capsys, "--addr", docker_daemon.addr, "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["address"] == docker_daemon.addr and d["engine"] == "docker"
    assert d["hasInfo"] is False and d["buildkit"] is None  # v0.8 has no Control.Info
    assert d["docker"]["version"] == docker_daemon.version and d["docker"]["apiVersion"] == "1.41"
    assert [w["id"] for w in d["workers"]] == ["moby"]
    assert "linux/amd64" in d["workers"][0]["platforms"]
    assert d["workers"][0]["cdiDevices"] == []


def test_control_calls_on_docker_20_10(docker_daemon: DockerDaemon) -> None:  # noqa: F811
    from workbench.remote.address import parse_address
    from workbench.remote.control import Control

    with Control(parse_address(docker_daemon.addr)) as control:
        info = control.info()
        assert (info.has_info, info.version) == (False, None)
        usage = control.disk_usage()
        assert all(r.id and r.size >= 0 for r in usage)
        relay = control.channel.relay
        assert relay is not None and f"@{relay.name}" in Path("/proc/net/unix").read_text()
    deadline = time.monotonic() + 10  # the relay dies with the channel (its copy threads close their ends)
    while f"@{relay.name}" in Path("/proc/net/unix").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"@{relay.name}" not in Path("/proc/net/unix").read_text()


def test_the_docker_relay_is_upgraded_to_h2c(docker_daemon: DockerDaemon) -> None:  # noqa: F811
    from workbench.remote.channel import dial_docker_grpc

    sock, rest, status = dial_docker_grpc(str(docker_daemon.socket))
    try:
        assert status == "HTTP/1.1 101 Switching Protocols"
        # the daemon is the HTTP/2 server: its SETTINGS frame (type 4 on stream 0) follows the 101 headers
        frame = rest
        while len(frame) < 9:
            frame += sock.recv(9 - len(frame))
        assert frame[3] == 0x04 and frame[5:9] == b"\0\0\0\0"
    finally:
        sock.close()


# -- buildkitd v0.20 -------------------------------------------------------------------------------------------

@pytest.fixture()
def buildkitd() -> str:
    return buildkitd_addr()


def test_builders_on_buildkitd_v0_20(buildkitd: str, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDKIT_HOST", buildkitd)
    code, out, err = builders(capsys, "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert (d["address"], d["source"], d["engine"], d["hasInfo"]) == (buildkitd, "BUILDKIT_HOST", "buildkitd", True)
    assert d["buildkit"]["package"] == "github.com/moby/buildkit" and d["version"] == d["buildkit"]["version"]
    worker = d["workers"][0]
    assert "linux/amd64" in worker["platforms"]
    assert worker["labels"]["org.mobyproject.buildkit.worker.executor"] in ("oci", "containerd")
    assert any(g["maxUsedSpace"] for g in worker["gcPolicy"])  # a v0.20 field, absent in v0.8
    code, out, _ = builders(capsys)
    assert code == 0 and out.splitlines()[:2] == [f"Address:\t{buildkitd} (from BUILDKIT_HOST)",
                                                  f"BuildKit:\t{d['version']}"]


# -- nothing there -----------------------------------------------------------------------------------------------

def test_an_absent_unix_socket_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    addr = f"unix://{tmp_path}/buildkitd.sock"
    code, _, err = builders(capsys, "--addr", addr)
    assert code == 1
    assert one_line(err) == (f"ERROR: cannot reach BuildKit at {addr} (--addr): {tmp_path}/buildkitd.sock does not "
                             f"exist; start buildkitd there, or point --addr (or BUILDKIT_HOST) at a running daemon\n")


def test_a_socket_nobody_listens_on_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))  # bound, never listening: what a crashed daemon leaves
        code, _, err = builders(capsys, "--addr", f"unix://{path}")
    assert code == 1
    assert f"cannot reach BuildKit at unix://{path} (--addr): connection refused;" in one_line(err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_tcp_port_with_nothing_listening_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    addr = f"tcp://127.0.0.1:{free_port()}"
    code, _, err = builders(capsys, "--addr", addr)
    assert code == 1
    assert f"ERROR: cannot reach BuildKit at {addr} (--addr): connection refused;" in one_line(err)


def test_an_absent_docker_socket_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    addr = f"docker://{tmp_path}/docker.sock"
    code, _, err = builders(capsys, "--addr", addr)
    assert code == 1
    assert one_line(err) == (f"ERROR: cannot reach Docker at {addr}: {tmp_path}/docker.sock: No such file or "
                             f"directory; is dockerd running, and may you use its socket?\n")


def test_a_socket_that_is_not_docker_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "not-docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)

    def answer_404() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    threading.Thread(target=answer_404, daemon=True).start()
    try:
        code, _, err = builders(capsys, "--addr", f"docker://{path}")
    finally:
        listener.close()
    assert code == 1
    assert f"{path} answered 'HTTP/1.1 404 Not Found' to POST /grpc, not 101" in one_line(err)


# -- TLS -----------------------------------------------------------------------------------------------------------

def test_a_bad_ca_file_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    code, _, err = builders(capsys, "--addr", "tcp://127.0.0.1:1234", "--tlscacert", str(garbage))
    assert code == 2
    assert one_line(err).startswith(f"ERROR: --tlscacert {garbage}: not a usable CA certificate (")
    code, _, err = builders(capsys, "--addr", "tcp://127.0.0.1:1234", "--tlscacert", str(tmp_path / "none.pem"))
    assert code == 2 and one_line(err) == f"ERROR: --tlscacert {tmp_path}/none.pem: No such file or directory\n"
    code, _, err = builders(capsys, "--addr", "unix:///run/buildkit/buildkitd.sock", "--tlscacert", str(garbage))
    assert code == 2 and "--tlscacert only applies to a tcp:// daemon" in one_line(err)


@pytest.fixture()
def plain_listener() -> Iterator[int]:
    """A TCP port that answers TLS with plain HTTP, as a daemon started without --tlscacert would."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield int(listener.getsockname()[1])
    listener.close()


def test_a_failed_tls_handshake_is_one_line(tmp_path: Path, plain_listener: int,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=buildkitd", "-keyout", str(tmp_path / "ca.key"), "-out", str(ca)],
                          capture_output=True, timeout=60)
    if made.returncode != 0:
        pytest.skip("needs openssl to make a CA certificate")
    addr = f"tcp://127.0.0.1:{plain_listener}"
    code, _, err = builders(capsys, "--addr", addr, "--tlscacert", str(ca), "--tlsservername", "buildkitd")
    assert code == 1
    line = one_line(err)
    assert line.startswith(f"ERROR: TLS with BuildKit at {addr} (--addr) failed (")
    assert "check --tlscacert, --tlscert/--tlskey and --tlsservername" in line


# -- addresses and the local engine ------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--addr", "buildkitd:1234"], "--addr 'buildkitd:1234': not an address; use unix:///PATH, tcp://HOST:PORT or "
                                   "docker://[/PATH/docker.sock]"),
    (["--addr", "tcp://buildkitd"], "--addr 'tcp://buildkitd': a tcp address needs a host and a port"),
    (["--addr", "unix://run/b.sock"], "--addr 'unix://run/b.sock': a unix socket needs an absolute path"),
    (["--addr", "docker://var/run/docker.sock"], "--addr 'docker://var/run/docker.sock': docker:// takes nothing or"),
    (["--tlscert", "/c.pem"], "--tlscert needs a tcp:// daemon"),
])
def test_bad_addresses_name_the_flag(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = builders(capsys, *args)
    assert code == 2 and one_line(err).startswith(f"ERROR: {message}")


def test_buildkit_host_is_named_when_it_is_wrong(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BUILDKIT_HOST", "http://buildkitd")
    code, _, err = builders(capsys)
    assert code == 2 and one_line(err).startswith("ERROR: BUILDKIT_HOST 'http://buildkitd': not an address")


def test_address_forms() -> None:
    from workbench.remote.address import parse_address

    docker = parse_address("docker://")
    assert (docker.scheme, docker.path) == ("docker", "/var/run/docker.sock")
    assert parse_address("docker:///run/user/1000/docker.sock").path == "/run/user/1000/docker.sock"
    tcp = parse_address("tcp://[::1]:1234")
    assert (tcp.host, tcp.port, tcp.tls) == ("::1", 1234, None)
    assert parse_address("unix:///run/buildkit/buildkitd.sock").path == "/run/buildkit/buildkitd.sock"


def test_builders_without_an_address_describes_the_local_engine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = builders(capsys, "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert (d["address"], d["engine"]) == ("local", "workbench")
    assert d["version"].startswith("workbench ") and d["version"].endswith(" (local engine)")
    assert [w["id"] for w in d["workers"]] == ["local"]
    assert d["workers"][0]["platforms"] == ["linux/amd64"] and isinstance(d["workers"][0]["cdiDevices"], list)


def test_the_command_line_does_not_import_grpc() -> None:
    probe = ("import sys\nfrom workbench.cli import _build_parser\n"
             "_build_parser().parse_args(['builders', '--addr', 'unix:///x.sock'])\n"
             "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', 'google.protobuf'))))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
