"""Layer tars: round trip through overlay lower format, exact tar format, and hostile tars that try to escape."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from workbench.fsutil.paths import UnsafePathError
from workbench.snapshot.layers import extract_layer, write_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners, device nodes and trusted.* xattrs need root")

PLAIN = "application/vnd.oci.image.layer.v1.tar"


def _describe(path: str) -> str:
    st = os.lstat(path)
    desc = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} mtime={int(st.st_mtime)}"
    if stat.S_ISLNK(st.st_mode):
        return desc + " -> " + os.readlink(path)
    xattrs = sorted((k, os.getxattr(path, k, follow_symlinks=False)) for k in os.listxattr(path, follow_symlinks=False))
    desc += f" xattrs={xattrs}"
    if stat.S_ISREG(st.st_mode):
        desc += f" nlink={st.st_nlink} " + Path(path).read_bytes().hex()
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        desc += f" dev={os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return desc


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = _describe(p)
    return out


def _sample(src: Path) -> Path:
    """A layer dir with one of everything overlay lower format holds."""
    (src / "d" / "opaque").mkdir(parents=True)
    (src / "d" / "opaque" / "inside").write_text("in")
    os.setxattr(src / "d" / "opaque", "trusted.overlay.opaque", b"y")
    (src / "d" / "f").write_text("data")
    os.chmod(src / "d" / "f", 0o4755)
    os.link(src / "d" / "f", src / "hard")
    (src / "sticky").mkdir(mode=0o1777)
    os.chmod(src / "sticky", 0o1777)
    (src / "owned").write_text("x")
    os.chown(src / "owned", 1000, 1000)
    os.lchown(src / "d", 1000, 2000)
    os.setxattr(src / "owned", "user.x", b"value")
    os.setxattr(src / "owned", "security.capability", bytes.fromhex("0100000200200000000000000000000000000000"))
    os.symlink("/etc/passwd", src / "abs-link")
    os.symlink("../d/f", src / "sticky" / "rel-link")
    os.lchown(src / "abs-link", 7, 8)
    os.mkfifo(src / "fifo", 0o640)
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(src / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(src / "d" / "gone-too", stat.S_IFCHR, os.makedev(0, 0))
    (src / "empty").write_bytes(b"")
    (src / "big").write_bytes(os.urandom(3 << 20))
    for p in sorted(src.rglob("*"), reverse=True) + [src]:  # fixed, distinct mtimes (children first)
        os.utime(p, (1_600_000_000 + len(str(p)), 1_600_000_000 + len(str(p))), follow_symlinks=False)
    return src


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    src = _sample(tmp_path / "src")
    want = _tree(src)
    buf = io.BytesIO()
    diff_id, digest, size = write_layer(src, buf)
    data = buf.getvalue()
    assert size == len(data) and digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    assert _tree(src) == want  # writing changes nothing

    dest = tmp_path / "dest"
    extract_layer(io.BytesIO(data), dest)
    assert _tree(dest) == want
    assert os.stat(dest / "hard").st_ino == os.stat(dest / "d" / "f").st_ino
    assert os.getxattr(dest / "d" / "opaque", "trusted.overlay.opaque") == b"y"
    # Extracted and written again: the very same blob.
    again = io.BytesIO()
    assert write_layer(dest, again) == (diff_id, digest, size)
    assert again.getvalue() == data


@pytest.mark.parametrize("compress, media_type", [
    ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("zstd", PLAIN),  # sniffed by magic bytes
    ("none", PLAIN),
    ("gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
])
def test_compressions(tmp_path: Path, compress: str, media_type: str) -> None:
    src = _sample(tmp_path / "src")
    buf = io.BytesIO()
    diff_id, digest, size = write_layer(src, buf, compress)
    data = buf.getvalue()
    raw = {"zstd": lambda b: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(b)).read(),
           "none": lambda b: b, "gzip": gzip.decompress}[compress](data)
    assert diff_id == "sha256:" + hashlib.sha256(raw).hexdigest() and size == len(data)
    if compress == "none":
        assert digest == diff_id
    extract_layer(io.BytesIO(data), tmp_path / "dest", media_type)
    assert _tree(tmp_path / "dest") == _tree(src)


def test_deterministic_gzip(tmp_path: Path) -> None:
    src = _sample(tmp_path / "src")
    one, two = io.BytesIO(), io.BytesIO()
    assert write_layer(src, one) == write_layer(src, two)
    assert one.getvalue() == two.getvalue()
    header = one.getvalue()[:10]
    assert header[:3] == b"\x1f\x8b\x08" and header[3] == 0  # no FNAME flag
    assert header[4:8] == b"\0\0\0\0"  # mtime 0


def test_tar_format(tmp_path: Path) -> None:
    src = _sample(tmp_path / "src")
    buf = io.BytesIO()
    write_layer(src, buf, "none")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    by_name = {m.name: m for m in members}
    # Relative, parents before children, sorted by path component.
    assert all(not n.startswith(("/", "./")) for n in names)
    assert names == sorted(names, key=lambda n: n.split("/"))
    for n in names:
        if "/" in n:
            assert names.index(n.rsplit("/", 1)[0]) < names.index(n)
    for wh in (".wh.gone", "d/.wh.gone-too", "d/opaque/.wh..wh..opq"):
        m = by_name[wh]
        assert m.isreg() and m.mode == 0 and m.size == 0 and (m.uid, m.gid) == (0, 0)
    assert "gone" not in by_name and "d/gone-too" not in by_name
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert by_name["d/f"].isreg() and by_name["hard"].islnk() and by_name["hard"].linkname == "d/f"
    assert by_name["d/f"].mode == 0o4755 and by_name["sticky"].mode == 0o1777
    assert (by_name["owned"].uid, by_name["owned"].gid) == (1000, 1000)
    assert by_name["owned"].pax_headers["SCHILY.xattr.user.x"] == "value"
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for m in members for k in m.pax_headers)
    assert by_name["null"].ischr() and (by_name["null"].devmajor, by_name["null"].devminor) == (1, 3)
    assert by_name["fifo"].isfifo() and by_name["abs-link"].linkname == "/etc/passwd"
    assert by_name["d/f"].mtime == int(os.lstat(src / "d" / "f").st_mtime)


def test_shared_whiteout_inodes_stay_whiteouts(tmp_path: Path) -> None:
    """overlayfs (5.8+) hard-links whiteouts to one shared inode: they must not become tar hardlinks."""
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "a", stat.S_IFCHR, os.makedev(0, 0))
    os.link(src / "a", src / "b")
    buf = io.BytesIO()
    write_layer(src, buf, "none")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert [(m.name, m.isreg(), m.size) for m in tar] == [(".wh.a", True, 0), (".wh.b", True, 0)]


def test_big_layer_is_fast(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(3000):
        d = src / f"d{i % 50}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * (i % 700))
    start = time.monotonic()
    buf = io.BytesIO()
    write_layer(src, buf)
    buf.seek(0)
    extract_layer(buf, tmp_path / "dest")
    assert time.monotonic() - start < 3  # typically a few hundred ms
    assert len(list((tmp_path / "dest").rglob("*"))) == 3050


def test_absolute_and_dotted_names_land_inside(tmp_path: Path) -> None:
    tar = _tar(lambda add: (add("/usr/bin/x", b"ok"), add("./etc/hosts", b"h"), add("/"), add("./")))
    dest = tmp_path / "dest"
    extract_layer(io.BytesIO(tar), dest, PLAIN)
    assert (dest / "usr" / "bin" / "x").read_bytes() == b"ok" and (dest / "etc" / "hosts").read_bytes() == b"h"


def test_whiteout_and_opaque_from_tar(tmp_path: Path) -> None:
    tar = _tar(lambda add: (add("dir", type=tarfile.DIRTYPE, mode=0o755), add("dir/.wh..wh..opq", b""),
                            add("dir/.wh.old", b"", mode=0), add(".wh..wh.plnk", b"")))
    dest = tmp_path / "dest"
    extract_layer(io.BytesIO(tar), dest, PLAIN)
    st = os.lstat(dest / "dir" / "old")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "dir", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest)) == ["dir"]


# --- hostile layers ---------------------------------------------------------------------------------

Add = Callable[..., None]


def _tar(fill: Callable[[Add], object]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name: str, data: bytes = b"pwned", **kw: object) -> None:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o644
            for k, v in kw.items():
                setattr(ti, k, v)
            ti.size = len(data) if ti.isreg() else 0
            t.addfile(ti, io.BytesIO(data) if ti.isreg() else None)

        fill(add)
    return buf.getvalue()


def _sym(add: Add, name: str, target: str) -> None:
    add(name, type=tarfile.SYMTYPE, linkname=target)


def _hard(add: Add, name: str, target: str) -> None:
    add(name, type=tarfile.LNKTYPE, linkname=target)


def _state(root: Path, skip: Path) -> dict[str, tuple[object, ...]]:
    """Everything about every path under `root` except inside `skip`."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames + ["."]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            xattrs = sorted(os.listxattr(p, follow_symlinks=False))
            out[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink, xattrs,
                      os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
    return out


HOSTILE: dict[str, Callable[[Path], Callable[[Add], object]]] = {
    "dotdot": lambda out: lambda add: (add("../escape.txt"), add("a/../../escape2"), add("../../../../escape3")),
    "abs-symlink-parent": lambda out: lambda add: (
        _sym(add, "evil", "/"), add("evil/tmp/pwned"), add("evil/etc/pwned"),
        add(f"evil{out}/victim"), add(f"evil{out}/new")),
    "abs-symlink-to-outside-dir": lambda out: lambda add: (_sym(add, "o", str(out)), add("o/victim"), add("o/new")),
    "rel-symlink-parent": lambda out: lambda add: (
        _sym(add, "up", "../../.."), add("up/escape3"), add("up/outside/victim"),
        add("deep/x", b"x"), _sym(add, "deep/up", "../../../../../.."), add("deep/up/escape4")),
    "symlink-chain": lambda out: lambda add: (
        _sym(add, "l1", "l2"), _sym(add, "l2", "../l3"), _sym(add, "l3", "/.."), add("l1/outside/victim")),
    "hardlink-abs": lambda out: lambda add: _hard(add, "shadow", "/etc/shadow"),
    "hardlink-dotdot": lambda out: lambda add: _hard(add, "shadow", "../../etc/shadow"),
    "hardlink-outside-file": lambda out: lambda add: _hard(add, "v", f"{out}/victim"),
    "hardlink-through-symlink": lambda out: lambda add: (
        _sym(add, "evil", "/"), _hard(add, "shadow", "evil/etc/shadow")),
    "hardlink-through-symlink-outside": lambda out: lambda add: (
        _sym(add, "o", str(out)), _hard(add, "v", "o/victim")),
    "overwrite-through-leaf-symlink": lambda out: lambda add: (
        _sym(add, "link", f"{out}/victim"), add("link", b"overwritten"),
        _sym(add, "dlink", str(out)), add("dlink", type=tarfile.DIRTYPE, mode=0o777)),
    "dir-replaced-by-symlink": lambda out: lambda add: (
        add("d", type=tarfile.DIRTYPE, mode=0o777, mtime=1),  # its metadata is applied late...
        add("d/x", b"x"),
        _sym(add, "d", str(out)),  # ...after d became a symlink to outside
        add("e", type=tarfile.DIRTYPE, mode=0o777, mtime=1),
        _sym(add, "e2", "/"), add("e2/..", type=tarfile.DIRTYPE, mode=0o777)),
    "whiteout-dotdot": lambda out: lambda add: (add("sub/.wh..."), add(".wh.."), add("sub/.wh.")),
    "whiteout-through-symlink": lambda out: lambda add: (_sym(add, "o", str(out)), add("o/.wh.victim", b"")),
    "opaque-through-symlink": lambda out: lambda add: (_sym(add, "o", str(out)), add("o/.wh..wh..opq", b"")),
    "device-and-fifo-through-symlink": lambda out: lambda add: (
        _sym(add, "o", str(out)), add("o/fifo", type=tarfile.FIFOTYPE),
        add("o/mem", type=tarfile.CHRTYPE, devmajor=1, devminor=1)),
    "xattr-overlay-redirect": lambda out: lambda add: add(
        "r", type=tarfile.DIRTYPE, pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/"}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_writes_nothing_outside(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("original")
    snap = tmp_path / "parent" / "snapshots" / "1" / "fs"
    snap.mkdir(parents=True)
    before = _state(tmp_path, snap)
    shadow = os.stat("/etc/shadow")
    root_names = set(os.listdir("/"))
    tar = _tar(HOSTILE[case](outside))

    try:
        extract_layer(io.BytesIO(tar), snap, PLAIN)
    except UnsafePathError as e:
        assert str(e)  # names the member and why

    assert _state(tmp_path, snap) == before
    assert (outside / "victim").read_text() == "original"
    after = os.stat("/etc/shadow")
    assert (after.st_ino, after.st_nlink, after.st_mtime_ns, after.st_mode) == \
        (shadow.st_ino, shadow.st_nlink, shadow.st_mtime_ns, shadow.st_mode)
    assert set(os.listdir("/")) == root_names
    for p in ("/tmp/pwned", "/etc/pwned", "/escape.txt", "/escape2", "/escape3", "/escape4"):
        assert not os.path.lexists(p)
    assert "trusted.overlay.redirect" not in os.listxattr(snap)
    if (snap / "r").exists():
        assert os.listxattr(snap / "r") == []


def test_hostile_members_are_clamped_or_refused(tmp_path: Path) -> None:
    """What the hostile cases do inside: escapes are clamped to the snapshot root; bad hardlinks refused."""
    out = tmp_path / "outside"
    snap = tmp_path / "snap"
    extract_layer(io.BytesIO(_tar(HOSTILE["dotdot"](out))), snap, PLAIN)
    assert sorted(os.listdir(snap)) == ["escape.txt", "escape2", "escape3"]
    snap = tmp_path / "snap2"
    extract_layer(io.BytesIO(_tar(HOSTILE["abs-symlink-parent"](out))), snap, PLAIN)
    assert (snap / "tmp" / "pwned").read_bytes() == b"pwned" and (snap / "etc" / "pwned").exists()
    assert (snap / str(out).lstrip("/") / "victim").exists()
    snap = tmp_path / "snap3"
    extract_layer(io.BytesIO(_tar(HOSTILE["rel-symlink-parent"](out))), snap, PLAIN)
    assert (snap / "escape3").exists() and (snap / "escape4").exists() and (snap / "outside" / "victim").exists()
    for case in ("hardlink-abs", "hardlink-dotdot", "hardlink-through-symlink", "hardlink-outside-file",
                 "whiteout-dotdot"):
        with pytest.raises(UnsafePathError):
            extract_layer(io.BytesIO(_tar(HOSTILE[case](out))), tmp_path / case, PLAIN)
    snap = tmp_path / "snap4"
    extract_layer(io.BytesIO(_tar(HOSTILE["overwrite-through-leaf-symlink"](out))), snap, PLAIN)
    assert (snap / "link").read_bytes() == b"overwritten" and not (snap / "link").is_symlink()
    assert (snap / "dlink").is_dir() and not (snap / "dlink").is_symlink()


def test_user_overlay_xattrs_are_a_steps_own_data_as_root(tmp_path: Path) -> None:
    """Root's overlay mounts never read user.overlay.* (only rootless `userxattr` mounts do): a step that builds
    nested rootless storage sets them as data, so its dir is not opaque and the xattrs reach the layer and back."""
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d" / "f").write_bytes(b"kept")
    os.setxattr(upper / "d", "user.overlay.opaque", b"y")
    os.setxattr(upper / "d", "user.overlay.origin", b"abc")
    os.setxattr(upper / "d", "trusted.overlay.impure", b"y")  # overlay's own: never in a layer
    buf = io.BytesIO()
    write_layer(upper, buf, compress="none")
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as t:
        members = {m.name.rstrip("/"): m for m in t.getmembers()}
    assert "d/.wh..wh..opq" not in members
    assert {k: v for k, v in members["d"].pax_headers.items() if k.startswith("SCHILY.xattr.")} == {
        "SCHILY.xattr.user.overlay.opaque": "y", "SCHILY.xattr.user.overlay.origin": "abc"}
    dest = tmp_path / "dest"
    extract_layer(io.BytesIO(buf.getvalue()), dest, PLAIN)
    assert os.getxattr(dest / "d", "user.overlay.opaque") == b"y"
    assert (dest / "d" / "f").read_bytes() == b"kept"


def _reader_threads() -> int:
    import threading

    return sum(1 for t in threading.enumerate() if t.name == "layer-read" and t.is_alive())


class _FailsAfter(io.RawIOBase):
    """A blob stream that gives `data` up to `at`, then fails as a broken download would."""

    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at, self.pos = data, at, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.pos >= self.at:
            raise ConnectionResetError("the registry went away")
        n = min(len(buffer), self.at - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_the_read_ahead_hands_on_each_failure_and_ends(tmp_path: Path) -> None:
    """The layer is read, inflated and hashed by a thread of its own: its failures reach the extraction as they
    would unthreaded, a stop ends it, and no reader thread outlives the extraction."""
    import threading

    from workbench.snapshot.layers import LayerContentError, LayerExtractionStopped

    src = tmp_path / "src"
    for i in range(40):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(200_000))
    blob = io.BytesIO()
    diff_id = write_layer(src, blob, "gzip")[0]
    data = blob.getvalue()
    assert extract_layer(io.BytesIO(data), tmp_path / "whole", "").diff_id == diff_id
    with pytest.raises(LayerContentError):
        extract_layer(io.BytesIO(data[: len(data) // 2] + b"\0" * 4096 + data[len(data) // 2 + 4096:]),
                      tmp_path / "corrupt", "")
    with pytest.raises(ConnectionResetError, match="went away"):
        extract_layer(io.BufferedReader(_FailsAfter(data, len(data) // 2)), tmp_path / "cut", "")
    stop = threading.Event()
    stop.set()
    with pytest.raises(LayerExtractionStopped):
        extract_layer(io.BytesIO(data), tmp_path / "stopped", "", stop)
    deadline = time.monotonic() + 10
    while _reader_threads():
        assert time.monotonic() < deadline, "a layer reader thread outlived its extraction"
        time.sleep(0.01)


def test_the_space_an_extraction_reports_is_what_du_measures(tmp_path: Path) -> None:
    """The GC remembers a pulled layer's size from its extraction instead of walking it again: the count must be
    the walk's (dirs grown by many entries, hard links once, long symlinks, xattrs, whiteouts, sparse blocks)."""
    from workbench.gc.units import disk_usage

    src = _sample(tmp_path / "src")
    many = src / "many"
    many.mkdir()
    for i in range(400):  # the dir grows to several blocks after it was made
        (many / f"entry-with-a-longish-name-{i:04}").write_bytes(b"x" * (i * 37))
    os.symlink("t" * 200, src / "long-link")  # a target too long for the inode
    buf = io.BytesIO()
    write_layer(src, buf)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    extracted = extract_layer(io.BytesIO(buf.getvalue()), snapshot / "fs")
    assert extracted.allocated + os.lstat(snapshot).st_blocks * 512 == disk_usage(snapshot)
    assert extracted.allocated > 3 << 20
