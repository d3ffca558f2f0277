"""FileSend.DiffCopy (workbench.remote.session.filesend): the build's output arriving from the daemon, driven by
a real grpcio client that plays the daemon (fsutil's sender for a local output, raw bytes for an archive)."""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.test_remote_session import Served
from workbench.remote.session import filesend
from workbench.remote.session.filesend import LocalOutput, TarOutput, filesend_handler, unix_mode
from workbench.remote.session.filesync import (
    MODE_CHAR_DEVICE,
    MODE_DEVICE,
    MODE_DIR,
    MODE_NAMED_PIPE,
    MODE_SETGID,
    MODE_SETUID,
    MODE_STICKY,
    MODE_SYMLINK,
    TreeWalk,
    go_mode,
)
from workbench.remote.session.h2server import Call, Handler
from workbench.remote.session.proto.filesync_pb2 import BytesMessage
from workbench.remote.session.proto.fsutil_types_pb2 import Packet, Stat
from workbench.remote.session.services import SessionServices, exposed_methods

FILESEND = "/moby.filesync.v1.FileSend/DiffCopy"
MTIME = 1_600_000_000_123_456_789


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """serve(handlers) -> a grpcio channel to our HTTP/2 server running them (over a unix socket)."""
    made: list[Served] = []

    def start(handlers: dict[str, Handler]) -> grpc.Channel:
        made.append(Served(tmp_path / f"s{len(made)}.sock", handlers))
        return made[-1].channel

    yield start
    for s in made:
        s.close()


def tracked(handler: Handler) -> tuple[Handler, threading.Event]:
    """`handler`, and an event set once a call of it has ended (its cleanup done)."""
    done = threading.Event()

    def run(call: Call) -> None:
        try:
            handler(call)
        finally:
            done.set()

    return run, done


def send_tree(channel: grpc.Channel, stats: list[Stat], data: dict[str, bytes],
              metadata: tuple[tuple[str, str], ...] = ()) -> tuple[grpc.StatusCode, str, list[str]]:
    """Plays fsutil's sender: the STATs, an empty STAT, the data of each REQ'd id, FIN for FIN.
    Returns the call's status, its message and the ERR packets the receiver sent."""
    requests: queue.Queue[Packet | None] = queue.Queue()

    def gen() -> Iterator[Packet]:
        while (p := requests.get()) is not None:
            yield p

    call = channel.stream_stream(FILESEND, request_serializer=Packet.SerializeToString,
                                 response_deserializer=Packet.FromString)(gen(), metadata=metadata, timeout=30)
    for s in stats:
        requests.put(Packet(type=Packet.PACKET_STAT, stat=s))
    requests.put(Packet(type=Packet.PACKET_STAT))
    errors: list[str] = []
    try:
        for p in call:
            if p.type == Packet.PACKET_REQ:
                body = data[stats[p.ID].path]
                for at in range(0, len(body), 1000):  # several chunks per file
                    requests.put(Packet(type=Packet.PACKET_DATA, ID=p.ID, data=body[at:at + 1000]))
                requests.put(Packet(type=Packet.PACKET_DATA, ID=p.ID))
            elif p.type == Packet.PACKET_FIN:
                requests.put(Packet(type=Packet.PACKET_FIN))
                requests.put(None)
            elif p.type == Packet.PACKET_ERR:
                errors.append(p.data.decode())
    except grpc.RpcError:
        pass
    finally:
        requests.put(None)
    return call.code(), call.details() or "", errors


def stats_of(root: Path) -> tuple[list[Stat], dict[str, bytes]]:
    """The listing and file contents our own FileSync sender would send for `root` (Go walk order, hardlinks)."""
    stats = list(TreeWalk(root))
    data = {s.path: (root / s.path).read_bytes() for s in stats
            if stat.S_ISREG(unix_mode(s.mode)) and not s.linkname}
    return stats, data


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "bin").mkdir(parents=True)
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(os.urandom(5000))
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "etc" / "conf.d" / "a.conf").write_text("a=1\n")
    (root / "etc" / "secret").write_text("s")
    os.chmod(root / "etc" / "secret", 0o600)
    (root / "etc" / "empty").write_bytes(b"")
    (root / "etc" / "link").symlink_to("conf.d/a.conf")
    (root / "dangling").symlink_to("/nonexistent/target")
    os.link(root / "bin" / "tool", root / "bin" / "tool-hard")
    os.chmod(root / "etc" / "conf.d", 0o750)
    for i, p in enumerate(sorted(root.rglob("*"), reverse=True)):  # children first: dir mtimes stay set
        os.utime(p, ns=(MTIME + i, MTIME + i), follow_symlinks=False)
    return root


def assert_same_tree(src: Path, dest: Path, skip: set[str] = frozenset()) -> None:
    want = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert [p for p in got if p not in skip] == want
    for p in want:
        a, b = os.lstat(src / p), os.lstat(dest / p)
        assert (b.st_mode, b.st_mtime_ns) == (a.st_mode, a.st_mtime_ns), p
        if stat.S_ISREG(a.st_mode):
            assert (dest / p).read_bytes() == (src / p).read_bytes(), p
        elif stat.S_ISLNK(a.st_mode):
            assert os.readlink(dest / p) == os.readlink(src / p), p


def test_local_output_lands_exactly(serve, tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "dest"
    channel = serve(SessionServices(output=LocalOutput(dest)).handlers())
    stats, data = stats_of(tree)
    assert any(s.linkname == "bin/tool" for s in stats)  # the hardlink travels as one
    code, details, errors = send_tree(channel, stats, data, (("buildkit-attachable-exporter-id", "0"),))
    assert (code, details, errors) == (grpc.StatusCode.OK, "", [])
    assert_same_tree(tree, dest)
    assert os.lstat(dest / "bin" / "tool").st_ino == os.lstat(dest / "bin" / "tool-hard").st_ino


def test_local_output_updates_an_existing_dest(serve, tree: Path, tmp_path: Path) -> None:
    """As buildctl: entries the stream names are replaced (whatever their type), others are left; a symlink
    already in DEST is replaced by the directory, never written through."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    outside.mkdir()
    (dest / "bin" / "tool").mkdir(parents=True)  # a directory where a file comes
    (dest / "bin" / "tool" / "old").write_text("old")
    (dest / "keep.txt").write_text("mine")
    (dest / "etc").symlink_to(outside)  # a link where a directory comes
    (dest / "dangling").write_text("a file where a link comes")
    channel = serve(SessionServices(output=LocalOutput(dest)).handlers())
    code, details, _ = send_tree(channel, *stats_of(tree))
    assert (code, details) == (grpc.StatusCode.OK, "")
    assert_same_tree(tree, dest, skip={"keep.txt"})
    assert (dest / "keep.txt").read_text() == "mine"
    assert list(outside.iterdir()) == []


def _stat(path: str, mode: int = 0o644, linkname: str = "", size: int = 0,
          xattrs: dict[str, bytes] | None = None) -> Stat:
    return Stat(path=path, mode=mode, linkname=linkname, size=size, modTime=MTIME, xattrs=xattrs or {})


@pytest.mark.parametrize("entries, message", [
    ([_stat("../x")], "escapes the destination"),
    ([_stat("a/../../x")], "unclean path"),
    ([_stat("OUTSIDE/abs")], "absolute path"),
    ([_stat("d", MODE_SYMLINK | 0o777, "OUTSIDE"), _stat("d/file")], "is not a directory sent before it"),
    ([_stat("hard", linkname="OUTSIDE/victim")], "hardlink to"),
    ([_stat("hard", linkname="../outside/victim")], "hardlink to"),
    ([_stat("d", MODE_DIR | 0o755), _stat("d/l", MODE_SYMLINK | 0o777, "OUTSIDE"), _stat("d/l/x")],
     "is not a directory sent before it"),
    ([_stat("b"), _stat("a")], "out of order"),
    ([_stat(".", MODE_DIR | 0o777)], "the destination itself"),
    ([_stat("d", MODE_DIR | 0o755), _stat("d/.", MODE_DIR | 0o777)], "unclean path"),
    ([_stat("./d", MODE_DIR | 0o755)], "unclean path"),
    ([_stat("d", MODE_DIR | 0o755), _stat("d//x")], "unclean path"),
    ([_stat("disk", MODE_DEVICE | 0o666)], "'disk': a device node"),
], ids=["dotdot", "unclean", "absolute", "through-symlink", "hardlink-abs", "hardlink-dotdot", "nested-symlink",
        "order", "dot", "dot-component", "dot-first", "empty-component", "device"])
def test_hostile_listing_is_refused_and_nothing_is_written(serve, tmp_path: Path, entries: list[Stat],
                                                           message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    for s in entries:
        s.path = s.path.replace("OUTSIDE", str(outside))
        s.linkname = s.linkname.replace("OUTSIDE", str(outside))
    dest = tmp_path / "dest"
    handler, done = tracked(filesend_handler([LocalOutput(dest)]))
    channel = serve({FILESEND: handler})
    code, details, errors = send_tree(channel, entries, {s.path: b"evil" for s in entries})
    assert done.wait(10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details and errors == [details]
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "precious"
    assert not (tmp_path / "x").exists()
    assert not dest.exists()  # the listing is checked whole before anything is made


CAPABILITY = b"\x01\x00\x00\x02\x00\x20" + b"\x00" * 14  # cap_net_raw=ep


@pytest.fixture
def umask_027() -> Iterator[int]:
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def test_output_modes_are_made_safe(serve, tmp_path: Path, umask_027: int) -> None:
    """Whatever the daemon sends: no setuid/setgid, sticky only on a directory, the umask applied to every mode,
    only user.* xattrs (red-team finding 1)."""
    dest = tmp_path / "dest"
    channel = serve({FILESEND: filesend_handler([LocalOutput(dest)])})
    stats = [_stat("fifo", MODE_NAMED_PIPE | 0o666),
             _stat("pub", MODE_DIR | 0o777),
             _stat("pub/g", MODE_SETGID | 0o775, size=2),
             _stat("pub/sh", MODE_SETUID | 0o755, size=13),
             _stat("pub/sticky", MODE_STICKY | 0o666, size=0),
             _stat("tmp", MODE_DIR | MODE_STICKY | 0o777)]
    stats[3].xattrs["security.capability"] = CAPABILITY
    stats[3].xattrs["trusted.x"] = b"t"
    stats[3].xattrs["user.note"] = b"kept"
    stats[1].xattrs["security.capability"] = CAPABILITY
    code, details, errors = send_tree(channel, stats, {"pub/g": b"g\n", "pub/sh": b"#!/bin/sh\nid\n",
                                                       "pub/sticky": b""})
    assert (code, details, errors) == (grpc.StatusCode.OK, "", [])
    modes = {p: stat.S_IMODE(os.lstat(dest / p).st_mode) for p in ("fifo", "pub", "pub/g", "pub/sh", "pub/sticky",
                                                                    "tmp")}
    assert modes == {"fifo": 0o640, "pub": 0o750, "pub/g": 0o750, "pub/sh": 0o750, "pub/sticky": 0o640,
                     "tmp": 0o1750}
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert (dest / "pub" / "sh").read_bytes() == b"#!/bin/sh\nid\n"
    assert os.listxattr(dest / "pub" / "sh") == ["user.note"]
    assert os.getxattr(dest / "pub" / "sh", "user.note") == b"kept"
    assert "security.capability" not in os.listxattr(dest / "pub")
    assert os.lstat(dest / "pub" / "sh").st_mtime_ns == MTIME


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_device_nodes_only_with_devices_true(serve, tmp_path: Path, umask_027: int) -> None:
    stats = [_stat("disk", MODE_DEVICE | 0o666), _stat("null", MODE_DEVICE | MODE_CHAR_DEVICE | MODE_SETUID | 0o666)]
    stats[0].devmajor, stats[0].devminor, stats[1].devmajor, stats[1].devminor = 1, 1, 1, 3
    dest, opted = tmp_path / "dest", tmp_path / "opted"
    channel = serve({FILESEND: filesend_handler([LocalOutput(dest)])})
    code, details, errors = send_tree(channel, stats, {})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and errors == [details]
    assert details == "refusing 'disk': a device node (the output takes them only with devices=true)"
    assert not dest.exists()
    channel = serve({FILESEND: filesend_handler([LocalOutput(opted, devices=True)])})
    assert send_tree(channel, stats, {}) == (grpc.StatusCode.OK, "", [])
    disk, null = os.lstat(opted / "disk"), os.lstat(opted / "null")
    assert stat.S_ISBLK(disk.st_mode) and disk.st_rdev == os.makedev(1, 1)
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(disk.st_mode) == stat.S_IMODE(null.st_mode) == 0o640


@pytest.mark.parametrize("mode", [MODE_SYMLINK | 0o777, MODE_DIR | 0o777, 0o666], ids=["symlink", "dir", "file"])
def test_an_entry_naming_dest_itself_is_refused(serve, tmp_path: Path, mode: int) -> None:
    """"." would have emptied DEST (replaced by a link) or chmodded it 0o777 (red-team finding 2)."""
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "precious.txt").write_text("mine")
    (dest / "sub" / "more").write_text("x")
    os.chmod(dest, 0o700)
    os.utime(dest, ns=(MTIME, MTIME))
    before = os.lstat(dest)
    handler, done = tracked(filesend_handler([LocalOutput(dest)]))
    channel = serve({FILESEND: handler})
    code, details, errors = send_tree(channel, [_stat(".", mode, "/etc")], {".": b"evil"})
    assert done.wait(10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and errors == [details]
    assert details == "refusing '.': an entry may not name the destination itself"
    after = os.lstat(dest)
    assert (after.st_mode, after.st_mtime_ns, after.st_ino) == (before.st_mode, before.st_mtime_ns, before.st_ino)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["precious.txt", "sub", "sub/more"]
    assert (dest / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize("bound, value, entries, message", [
    ("MAX_ENTRIES", 3, [_stat(f"f{i}") for i in range(4)], "its listing has more than 3 entries"),
    ("MAX_LISTING_BYTES", 3000, [_stat("x" * 120 + str(i)) for i in range(3)],
     "its listing would hold more than 3000 bytes of memory"),
    # 4 STATs of ~200 bytes each (serialized: far under the bound), but 20 xattrs each: ~5 KB each once parsed
    ("MAX_LISTING_BYTES", 20_000, [_stat(f"f{i}", xattrs={f"user.{j}": b"" for j in range(20)}) for i in range(4)],
     "its listing would hold more than 20000 bytes of memory"),
], ids=["entries", "bytes", "memory"])
def test_listing_is_bounded(serve, tmp_path: Path, monkeypatch, bound: str, value: int, entries: list[Stat],
                            message: str) -> None:
    monkeypatch.setattr(filesend, bound, value, raising=False)
    dest = tmp_path / "dest"
    handler, done = tracked(filesend_handler([LocalOutput(dest)]))
    channel = serve({FILESEND: handler})
    code, details, errors = send_tree(channel, entries, {s.path: b"" for s in entries})
    assert done.wait(10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and errors == [details]
    assert details == f"refusing the output: {message}"
    assert not dest.exists()


def test_a_file_stops_at_its_declared_size(serve, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    handler, done = tracked(filesend_handler([LocalOutput(dest)]))
    channel = serve({FILESEND: handler})
    stats = [_stat("a", size=3), _stat("big", size=1500)]
    code, details, errors = send_tree(channel, stats, {"a": b"abc", "big": b"y" * 1500 + b"z" * 100_000})
    assert done.wait(10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and errors == [details]
    assert details == "refusing 'big': the sender sent more than the 1500 bytes it announced"
    assert (dest / "big").read_bytes() == b"y" * 1500
    assert (dest / "a").read_bytes() == b"abc"


def test_sender_error_fails_the_call(serve, tmp_path: Path) -> None:
    requests = iter([Packet(type=Packet.PACKET_STAT, stat=_stat("a")),
                     Packet(type=Packet.PACKET_ERR, data=b"disk on fire")])
    channel = serve(SessionServices(output=LocalOutput(tmp_path / "dest")).handlers())
    call = channel.stream_stream(FILESEND, request_serializer=Packet.SerializeToString,
                                 response_deserializer=Packet.FromString)(requests, timeout=30)
    with pytest.raises(grpc.RpcError):
        list(call)
    assert "error from sender: disk on fire" in (call.details() or "")


def send_bytes(channel: grpc.Channel, chunks: list[bytes], cancel_after: int | None = None):
    gate = threading.Event()

    def gen() -> Iterator[BytesMessage]:
        for i, c in enumerate(chunks):
            if i == cancel_after:
                gate.set()
                threading.Event().wait()  # hold the stream open; the call is cancelled from outside
            yield BytesMessage(data=c)

    call = channel.stream_stream(FILESEND, request_serializer=BytesMessage.SerializeToString,
                                 response_deserializer=BytesMessage.FromString)(
        gen(), metadata=(("exporter-md-containerimage.digest", "sha256:x"),), timeout=30)
    if cancel_after is not None:
        gate.wait(10)
        call.cancel()
    try:
        list(call)
    except grpc.RpcError:
        pass
    return call


def test_archive_bytes_land_in_the_file(serve, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "image.tar"
    chunks = [os.urandom(100_000) for _ in range(7)]
    channel = serve(SessionServices(output=TarOutput(dest)).handlers())
    call = send_bytes(channel, chunks)
    assert call.code() == grpc.StatusCode.OK
    assert dest.read_bytes() == b"".join(chunks)
    assert os.listdir(dest.parent) == ["image.tar"]


def test_archive_cut_off_leaves_no_file(serve, tmp_path: Path) -> None:
    dest = tmp_path / "image.tar"
    dest.write_bytes(b"the previous export")
    handler, done = tracked(filesend_handler([TarOutput(dest)]))
    channel = serve({FILESEND: handler})
    call = send_bytes(channel, [b"x" * 300_000] * 4, cancel_after=2)
    assert call.code() == grpc.StatusCode.CANCELLED
    assert done.wait(10)
    assert os.listdir(tmp_path) == [n for n in os.listdir(tmp_path) if not n.startswith(".")]
    assert sorted(n for n in os.listdir(tmp_path) if "image" in n) == ["image.tar"]
    assert dest.read_bytes() == b"the previous export"


def test_archive_to_stdout(serve, capfdbinary) -> None:
    handler, done = tracked(filesend_handler([TarOutput("-")]))
    channel = serve({FILESEND: handler})
    call = send_bytes(channel, [b"abc", b"", b"def" * 10_000])
    assert call.code() == grpc.StatusCode.OK and done.wait(10)
    assert capfdbinary.readouterr().out == b"abc" + b"def" * 10_000


def test_unknown_exporter_id_is_not_found(serve, tmp_path: Path) -> None:
    channel = serve(SessionServices(output=TarOutput(tmp_path / "x.tar")).handlers())
    call = channel.stream_stream(FILESEND)(iter([b""]), metadata=(("buildkit-attachable-exporter-id", "1"),),
                                           timeout=10)
    with pytest.raises(grpc.RpcError):
        list(call)
    assert call.code() == grpc.StatusCode.NOT_FOUND and "exporter 1 not found" in (call.details() or "")
    assert not (tmp_path / "x.tar").exists()


def test_filesend_is_announced_only_with_an_output(tmp_path: Path) -> None:
    assert FILESEND not in exposed_methods(SessionServices().handlers())
    assert FILESEND in exposed_methods(SessionServices(output=LocalOutput(tmp_path)).handlers())


def test_unix_mode_inverts_go_mode() -> None:
    for mode in (stat.S_IFREG | 0o4755, stat.S_IFDIR | 0o1777, stat.S_IFLNK | 0o777, stat.S_IFCHR | 0o620,
                 stat.S_IFBLK | 0o660, stat.S_IFIFO | 0o644, stat.S_IFREG | 0o2600):
        assert unix_mode(go_mode(mode)) == mode


ORACLE = os.environ.get("WORKBENCH_FSUTIL_ORACLE", "")


@pytest.mark.skipif(not ORACLE, reason="set WORKBENCH_FSUTIL_ORACLE to tests/data/fsoracle built with `send`")
def test_fsutil_sender_output_lands_exactly(tmp_path: Path, tree: Path) -> None:
    """BuildKit's own sender (fsutil.Send, as exporter/local's CopyToCaller runs it) into our receiver.

    Build the oracle offline inside a BuildKit v0.20.2 checkout: copy tests/data/fsoracle/main.go to
    cmd/fsoracle/ and run `GOFLAGS=-mod=vendor GOPROXY=off go build -o fsoracle ./cmd/fsoracle`."""
    import subprocess

    (tree / "big").write_bytes(os.urandom(3_000_000))
    (tree / "many").mkdir()
    for i in range(100):  # more files than the receiver requests at once
        (tree / "many" / f"f{i:03}").write_text(str(i) * i)
    (tree / "b-c").write_text("sorts after b/ byte-wise")
    os.utime(tree / "many", ns=(MTIME, MTIME))
    os.utime(tree, ns=(MTIME, MTIME))
    dest = tmp_path / "dest"
    sock = tmp_path / "o.sock"
    served = Served(sock, SessionServices(output=LocalOutput(dest)).handlers())
    try:
        run = subprocess.run([ORACLE, "send", str(sock), str(tree), "buildkit-attachable-exporter-id=0"],
                             capture_output=True, text=True, timeout=120)
    finally:
        served.close()
    assert run.returncode == 0, run.stderr
    assert_same_tree(tree, dest)
    assert os.lstat(dest / "bin" / "tool").st_ino == os.lstat(dest / "bin" / "tool-hard").st_ino
