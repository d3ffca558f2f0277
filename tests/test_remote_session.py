"""The session services BuildKit calls back (workbench.remote.session), driven by a real gRPC client:
grpcio over a unix socket whose accepted connections are served by our HTTP/2 server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from workbench.frontend.dockerfile.dockerignore import load_dockerignore
from workbench.remote.session.filesync import MODE_DIR, MODE_SYMLINK, TreeWalk, go_mode
from workbench.remote.session.h2server import Call, H2GrpcServer, Handler
from workbench.remote.session.proto.auth_pb2 import CredentialsRequest, CredentialsResponse
from workbench.remote.session.proto.fsutil_types_pb2 import Packet
from workbench.remote.session.proto.health_pb2 import HealthCheckRequest, HealthCheckResponse
from workbench.remote.session.proto.secrets_pb2 import GetSecretRequest, GetSecretResponse
from workbench.remote.session.services import SessionServices, exposed_methods
from workbench.solver.session import SecretSource

DIFFCOPY = "/moby.filesync.v1.FileSync/DiffCopy"


class Served:
    """A unix socket; every connection grpcio opens is handed to an H2GrpcServer with `handlers`."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.handlers = handlers
        self.servers: list[H2GrpcServer] = []
        threading.Thread(target=self._accept, daemon=True).start()
        self.channel = grpc.insecure_channel(f"unix:{path}")

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            server = H2GrpcServer(conn, self.handlers)
            self.servers.append(server)
            threading.Thread(target=server.serve, daemon=True).start()

    def close(self) -> None:
        self.channel.close()
        self.sock.close()
        for s in self.servers:
            s.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    made: list[Served] = []

    def start(handlers: dict[str, Handler]) -> grpc.Channel:
        s = Served(tmp_path / f"s{len(made)}.sock", handlers)
        made.append(s)
        return s.channel

    yield start
    for s in made:
        s.close()


class SenderError(Exception):
    """The sender ended the transfer with PACKET_ERR (what fsutil's receiver reports as "error from sender")."""


def diffcopy(channel: grpc.Channel, metadata: list[tuple[str, str]], want=lambda stat: True,
             pause: threading.Event | None = None) -> tuple[list, dict[str, bytes]]:
    """Runs the receiver side of DiffCopy: the listing, then the data of the files `want` picks, then FIN.
    With `pause`, reading stops after the first DATA packet until it is set."""
    requests: queue.Queue[Packet | None] = queue.Queue()

    def gen() -> Iterator[Packet]:
        while (p := requests.get()) is not None:
            yield p

    call = channel.stream_stream(DIFFCOPY, request_serializer=Packet.SerializeToString,
                                 response_deserializer=Packet.FromString)(gen(), metadata=metadata, timeout=30)
    stats: list = []
    chunks: dict[int, list[bytes]] = {}
    pending: set[int] = set()
    try:
        for p in call:
            if p.type == Packet.PACKET_STAT:
                if p.HasField("stat"):
                    stats.append(p.stat)
                    continue
                for i, s in enumerate(stats):
                    if s.mode & 0xFFF80000 == 0 and want(s):
                        pending.add(i)
                        chunks[i] = []
                        requests.put(Packet(type=Packet.PACKET_REQ, ID=i))
                if not pending:
                    requests.put(Packet(type=Packet.PACKET_FIN))
            elif p.type == Packet.PACKET_DATA:
                if p.data:
                    chunks[p.ID].append(p.data)
                    if pause is not None:
                        pause.wait()
                        pause = None
                else:
                    pending.discard(p.ID)
                    if not pending:
                        requests.put(Packet(type=Packet.PACKET_FIN))
            elif p.type == Packet.PACKET_FIN:
                break
            elif p.type == Packet.PACKET_ERR:
                raise SenderError(p.data.decode())
            else:
                raise AssertionError(f"unexpected packet {p}")
    finally:
        requests.put(None)
    assert call.code() in (grpc.StatusCode.OK, None)
    return stats, {stats[i].path: b"".join(c) for i, c in chunks.items()}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "b").mkdir(parents=True)
    (root / "build").mkdir()
    (root / ".dockerignore").write_text("*.log\n!keep.log\nbuild/\n")
    (root / "a.txt").write_text("hello\n")
    (root / "b" / "c.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "b" / "c.sh", 0o755)
    (root / "b" / "link").symlink_to("../a.txt")
    (root / "b" / "out").symlink_to("/etc/passwd")
    (root / "x.log").write_text("noise")
    (root / "keep.log").write_text("kept")
    (root / "build" / "artifact").write_text("big")
    os.link(root / "a.txt", root / "hard")
    return root


def test_listing_follows_dockerignore_in_go_walk_order(serve, tree: Path) -> None:
    channel = serve(SessionServices(dirs={"context": tree}).handlers())
    excludes = load_dockerignore(tree)
    md = [("dir-name", "context")] + [("exclude-patterns", p) for p in excludes]
    stats, data = diffcopy(channel, md)
    assert [s.path for s in stats] == [".dockerignore", "a.txt", "b", "b/c.sh", "b/link", "b/out", "hard", "keep.log"]
    by = {s.path: s for s in stats}
    assert by["b"].mode == MODE_DIR | 0o755 and by["b"].size == 0
    assert by["b/c.sh"].mode == 0o755 and by["b/c.sh"].size == len("#!/bin/sh\necho hi\n")
    assert by["b/link"].mode == MODE_SYMLINK | 0o777 and by["b/link"].linkname == "../a.txt"
    assert by["b/out"].linkname == "/etc/passwd"  # sent as a link, never followed
    assert by["hard"].linkname == "a.txt"  # a hardlink to the file sent first
    for s in stats:
        lst = os.lstat(tree / s.path)
        assert (s.modTime, s.uid, s.gid) == (lst.st_mtime_ns, 0, 0)
        assert s.mode == go_mode(lst.st_mode)
    # the data of every regular file (ids count every entry, directories and links too)
    assert data == {".dockerignore": b"*.log\n!keep.log\nbuild/\n", "a.txt": b"hello\n",
                    "b/c.sh": b"#!/bin/sh\necho hi\n", "hard": b"hello\n", "keep.log": b"kept"}


def test_data_only_for_requested_ids(serve, tree: Path) -> None:
    channel = serve(SessionServices(dirs={"context": tree}).handlers())
    stats, data = diffcopy(channel, [("dir-name", "context")], want=lambda s: s.path == "b/c.sh")
    assert {"a.txt", "hard", "keep.log"} <= {s.path for s in stats}
    assert data == {"b/c.sh": b"#!/bin/sh\necho hi\n"}


def test_concurrent_big_files_do_not_interleave(serve, tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    blobs = {f"f{i}": os.urandom(3_000_000 + i) for i in range(8)}  # many frames each, sent by 4 threads at once
    for name, blob in blobs.items():
        (root / name).write_bytes(blob)
    channel = serve(SessionServices(dirs={"context": root}).handlers())
    # the receiver stalls a moment: the senders all wait for window, and wake together when it opens
    pause = threading.Event()
    timer = threading.Timer(0.5, pause.set)
    timer.start()
    _, data = diffcopy(channel, [("dir-name", "context")], pause=pause)
    timer.cancel()
    assert data == blobs


def test_include_patterns_send_parent_dirs_lazily(serve, tree: Path) -> None:
    channel = serve(SessionServices(dirs={"context": tree}).handlers())
    stats, _ = diffcopy(channel, [("dir-name", "context"), ("include-patterns", "b/*.sh")])
    assert [s.path for s in stats] == ["b", "b/c.sh"]
    stats, _ = diffcopy(channel, [("dir-name", "context"), ("include-patterns", "b"),
                                  ("exclude-patterns", "b/out")])
    assert [s.path for s in stats] == ["b", "b/c.sh", "b/link"]


def test_followpaths_resolve_links_inside_the_dir(serve, tree: Path) -> None:
    channel = serve(SessionServices(dirs={"context": tree}).handlers())
    stats, data = diffcopy(channel, [("dir-name", "context"), ("followpaths", "b/link"),
                                     ("followpaths", "b/out")])
    # b/out -> /etc/passwd resolves to etc/passwd inside the dir: absent, so nothing of the host is sent
    assert [s.path for s in stats] == ["a.txt", "b", "b/link", "b/out"]
    assert data["a.txt"] == b"hello\n"


def test_a_dir_swapped_for_a_link_after_the_listing_serves_nothing_outside(serve, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "a").mkdir(parents=True)
    (ctx / "a" / "shadow").write_text("harmless\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_text("SECRET OUTSIDE THE CONTEXT\n")
    channel = serve(SessionServices(dirs={"context": ctx}).handlers())

    def swap(stat) -> bool:  # once the listing is in, before the REQs: a/ becomes a link out of the context
        if not (tmp_path / "a.old").exists():
            os.rename(ctx / "a", tmp_path / "a.old")
            os.symlink(outside, ctx / "a")
        return True

    stats, data = diffcopy(channel, [("dir-name", "context")], swap)
    assert [s.path for s in stats] == ["a", "a/shadow"]
    assert data == {"a/shadow": b""}  # as a file gone since the listing


def test_a_dir_swapped_for_a_link_during_the_walk_lists_nothing_outside(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "a").mkdir(parents=True)
    (ctx / "a" / "shadow").write_text("harmless\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("SECRET\n")
    listed = []
    for s in TreeWalk(ctx):
        listed.append(s.path)
        if s.path == "a":  # listed, not yet walked into
            os.rename(ctx / "a", tmp_path / "a.old")
            os.symlink(outside, ctx / "a")
    assert "a/secret" not in listed and listed[0] == "a"


def test_files_replaced_after_the_listing_are_sent_empty(serve, tree: Path) -> None:
    channel = serve(SessionServices(dirs={"context": tree}).handlers())

    def replace(stat) -> bool:
        if (tree / "a.txt").is_file() and not (tree / "a.txt").is_symlink() and stat.path == "a.txt":
            os.remove(tree / "a.txt")
            os.mkfifo(tree / "a.txt")  # no writer: an open without O_NONBLOCK would wait forever
            (tree / "new").write_text("other bytes")
            os.replace(tree / "new", tree / "keep.log")
        return True

    _, data = diffcopy(channel, [("dir-name", "context")], replace)
    assert data["a.txt"] == b"" and data["keep.log"] == b""
    assert data["hard"] == b"hello\n" and data["b/c.sh"] == b"#!/bin/sh\necho hi\n"


def test_the_session_applies_dockerignore_whatever_the_daemon_asks(serve, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / ".dockerignore").write_text(".env\n")
    (ctx / ".env").write_text("AWS_SECRET_ACCESS_KEY=abc\n")
    (ctx / "app.py").write_text("print()\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / "Dockerfile").write_text("FROM scratch\n")
    (home / "other").write_text("not the Dockerfile\n")
    channel = serve(SessionServices(dirs={"context": ctx, "dockerfile": home}).handlers())
    # a daemon that sends no exclude-patterns, or asks for the excluded file by name
    assert diffcopy(channel, [("dir-name", "context")])[1] == {".dockerignore": b".env\n", "app.py": b"print()\n"}
    assert diffcopy(channel, [("dir-name", "context"), ("include-patterns", ".env")])[1] == {}
    # given the folder, only a file named Dockerfile (and its ignore files) in it
    assert diffcopy(channel, [("dir-name", "dockerfile")])[1] == {"Dockerfile": b"FROM scratch\n"}


def test_dockerfile_dir_serves_only_the_named_dockerfile_and_its_ignore_file(serve, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / ".dockerignore").write_text("*.txt\n")
    (ctx / "notes.txt").write_text("kept: the Dockerfile's own ignore file applies instead\n")
    (ctx / "secret.pem").write_text("KEY\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / "app.Dockerfile").write_text("FROM scratch\n")
    (home / "app.Dockerfile.dockerignore").write_text("*.pem\n")
    (home / "Dockerfile").write_text("FROM busybox\n")
    channel = serve(SessionServices(dirs={"context": ctx, "dockerfile": home / "app.Dockerfile"}).handlers())
    assert diffcopy(channel, [("dir-name", "dockerfile")])[1] == {
        "app.Dockerfile": b"FROM scratch\n", "app.Dockerfile.dockerignore": b"*.pem\n"}
    assert diffcopy(channel, [("dir-name", "context")])[1] == {
        ".dockerignore": b"*.txt\n", "notes.txt": b"kept: the Dockerfile's own ignore file applies instead\n"}


def _filesync_threads() -> list[str]:
    deadline = threading.Event()
    for _ in range(100):  # handlers end a moment after the client has gone: wait for them, up to 10 s
        names = [t.name for t in threading.enumerate() if t.name.startswith("filesync-")]
        if not names:
            break
        deadline.wait(0.1)
    return names


def test_cancelled_diffcopy_stops_its_threads(serve, tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(3000):
        (root / f"f{i:05}").write_bytes(b"")
    channel = serve(SessionServices(dirs={"context": root}).handlers())
    md = [("dir-name", "context")]
    for _ in range(5):
        call = channel.stream_stream(DIFFCOPY, request_serializer=Packet.SerializeToString,
                                     response_deserializer=Packet.FromString)(iter(()), metadata=md)
        assert next(call).type == Packet.PACKET_STAT
        call.cancel()
    assert _filesync_threads() == []


def test_a_name_that_is_not_utf8_is_one_line_and_stops_the_threads(serve, tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "a.txt").write_text("a")
    with open(os.path.join(os.fsencode(root), b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    channel = serve(SessionServices(dirs={"context": root}).handlers())
    with pytest.raises(SenderError) as e:
        diffcopy(channel, [("dir-name", "context")])
    assert str(e.value) == ("context file b'bad\\xff.txt': its name is not UTF-8, which a BuildKit session cannot "
                            "carry; rename it or add it to .dockerignore")
    assert _filesync_threads() == []
    (root / ".dockerignore").write_bytes(b"bad\xff.txt\n")  # ignored, it is no obstacle
    channel = serve(SessionServices(dirs={"context": root}).handlers())
    assert diffcopy(channel, [("dir-name", "context")])[1] == {".dockerignore": b"bad\xff.txt\n", "a.txt": b"a"}


def test_unknown_dir_name_is_not_found(serve, tree: Path) -> None:
    channel = serve(SessionServices(dirs={"context": tree}).handlers())
    with pytest.raises(grpc.RpcError) as e:
        diffcopy(channel, [("dir-name", "other")])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_answers_while_a_big_file_is_stalled(serve, tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    blob = os.urandom(20 * 1024 * 1024)
    (root / "blob").write_bytes(blob)
    channel = serve(SessionServices(dirs={"context": root}).handlers())
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=HealthCheckRequest.SerializeToString,
                                response_deserializer=HealthCheckResponse.FromString)
    pause = threading.Event()
    result: dict[str, bytes] = {}
    t = threading.Thread(target=lambda: result.update(diffcopy(channel, [("dir-name", "context")], pause=pause)[1]))
    t.start()
    try:
        # the receiver reads nothing now: the sender fills the windows and waits, health must not
        for _ in range(5):
            assert check(HealthCheckRequest(), timeout=1).status == HealthCheckResponse.SERVING
    finally:
        pause.set()
    t.join(60)
    assert hashlib.sha256(result["blob"]).digest() == hashlib.sha256(blob).digest()


def test_request_bigger_than_the_window(serve) -> None:
    def size(call: Call) -> None:
        for m in call.messages():
            call.send(str(len(m)).encode())

    channel = serve({"/t.T/Size": size})
    call = channel.stream_stream("/t.T/Size")
    big = [b"x" * (6 * 1024 * 1024), b"y" * 10, b"z" * (5 * 1024 * 1024)]
    assert [int(r) for r in call(iter(big), timeout=30)] == [len(b) for b in big]


def test_unknown_method_is_unimplemented(serve) -> None:
    channel = serve(SessionServices().handlers())
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/moby.filesync.v1.FileSync/TarStream")(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/moby.filesync.v1.Auth/GetTokenAuthority")(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_handler_error_reaches_the_client_as_status(serve) -> None:
    def boom(call: Call) -> None:
        raise ValueError("bad 100% ünïcode")

    channel = serve({"/t.T/Boom": boom})
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/t.T/Boom")(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert e.value.details() == "ValueError: bad 100% ünïcode"


def test_secret_found_and_not_found(serve, tmp_path: Path) -> None:
    (tmp_path / "tok").write_bytes(b"s3cr3t")
    channel = serve(SessionServices(secrets={"tok": SecretSource("tok", path=str(tmp_path / "tok"))}).handlers())
    get = channel.unary_unary("/moby.buildkit.secrets.v1.Secrets/GetSecret",
                              request_serializer=GetSecretRequest.SerializeToString,
                              response_deserializer=GetSecretResponse.FromString)
    assert get(GetSecretRequest(ID="tok"), timeout=10).data == b"s3cr3t"
    with pytest.raises(grpc.RpcError) as e:
        get(GetSecretRequest(ID="nope"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "s3cr3t" not in (e.value.details() or "")


def test_credentials_from_docker_config(serve, tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "docker"
    conf.mkdir()
    auth = base64.b64encode(b"alice:pa55").decode()
    (conf / "config.json").write_text(json.dumps({"auths": {"registry.example:5000": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(conf))
    channel = serve(SessionServices().handlers())
    creds = channel.unary_unary("/moby.filesync.v1.Auth/Credentials",
                                request_serializer=CredentialsRequest.SerializeToString,
                                response_deserializer=CredentialsResponse.FromString)
    got = creds(CredentialsRequest(Host="registry.example:5000"), timeout=10)
    assert (got.Username, got.Secret) == ("alice", "pa55")
    got = creds(CredentialsRequest(Host="other.example"), timeout=10)
    assert (got.Username, got.Secret) == ("", "")


def test_exposed_methods_name_filesync_when_dirs_are_served(tree: Path) -> None:
    methods = exposed_methods(SessionServices(dirs={"context": tree}).handlers())
    assert DIFFCOPY in methods and "/grpc.health.v1.Health/Check" in methods
    assert "/moby.filesync.v1.Auth/Credentials" in methods
    assert "/moby.buildkit.secrets.v1.Secrets/GetSecret" in methods
    assert DIFFCOPY not in exposed_methods(SessionServices().handlers())


def test_go_mode_bits() -> None:
    assert go_mode(stat.S_IFDIR | 0o1777) == MODE_DIR | (1 << 20) | 0o777
    assert go_mode(stat.S_IFREG | 0o4755) == (1 << 23) | 0o755
    assert go_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert go_mode(stat.S_IFSOCK | 0o755) == 0o755  # the socket bit is cleared, as fsutil does


ORACLE = os.environ.get("WORKBENCH_FSUTIL_ORACLE", "")


@pytest.mark.skipif(not ORACLE, reason="set WORKBENCH_FSUTIL_ORACLE to fsutil's receiver (tests/data/fsoracle)")
@pytest.mark.parametrize("args", [[], ["exclude-patterns=*.log", "exclude-patterns=!keep.log",
                                       "exclude-patterns=build/"], ["followpaths=b/link"]])
def test_fsutil_receiver_accepts_the_stream(tmp_path: Path, tree: Path, args: list[str]) -> None:
    """BuildKit's own receiver (fsutil.Receive, which checks the order and the hardlinks) rebuilds the tree.

    Build the oracle offline inside a BuildKit v0.20.2 checkout: copy tests/data/fsoracle/main.go to
    cmd/fsoracle/ and run `GOFLAGS=-mod=vendor GOPROXY=off go build -o fsoracle ./cmd/fsoracle`."""
    import subprocess

    (tree / "big").write_bytes(os.urandom(3_000_000))
    (tree / "b-c").write_text("sorts after b/ byte-wise")
    sock = tmp_path / "o.sock"
    served = Served(sock, SessionServices(dirs={"context": tree}).handlers())
    dest = tmp_path / "dest"
    dest.mkdir()
    try:
        run = subprocess.run([ORACLE, str(sock), str(dest), "dir-name=context", *args], capture_output=True,
                             text=True, timeout=120)
    finally:
        served.close()
    assert run.returncode == 0, run.stderr
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert got and all((tree / p).exists() or (tree / p).is_symlink() for p in got)
    if not args:  # the context's .dockerignore applies whatever the daemon asks
        ignored = {"x.log", "build", "build/artifact"}
        assert got == sorted(p for p in (str(p.relative_to(tree)) for p in tree.rglob("*")) if p not in ignored)
    for p in got:
        src, out = os.lstat(tree / p), os.lstat(dest / p)
        assert (out.st_mode, out.st_mtime_ns) == (src.st_mode, src.st_mtime_ns), p
        if stat.S_ISREG(src.st_mode):
            assert (dest / p).read_bytes() == (tree / p).read_bytes()
        elif stat.S_ISLNK(src.st_mode):
            assert os.readlink(dest / p) == os.readlink(tree / p)


def test_generated_session_protos_are_current(tmp_path: Path) -> None:
    """The committed *_pb2.py / .pyi are what workbench/remote/session/proto/gen.sh makes of the .proto files."""
    from grpc_tools import protoc

    repo = Path(__file__).resolve().parent.parent
    proto_dir = repo / "workbench/remote/session/proto"
    protos = sorted(str(p) for p in proto_dir.glob("*.proto"))
    assert protoc.main(["protoc", "-I", str(repo), f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", *protos]) == 0
    made = sorted((tmp_path / "workbench/remote/session/proto").iterdir())
    committed = sorted(p.name for p in proto_dir.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))
    assert [p.name for p in made] == committed
    for p in made:
        assert p.read_bytes() == (proto_dir / p.name).read_bytes(), f"{p.name}: run {proto_dir / 'gen.sh'}"
