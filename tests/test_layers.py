"""Layer tars: round trip through overlay lower format, and hostile tars that try to escape."""

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from workbench.snapshot.layers import UnsafeLayerError, extract_layer, write_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners and device nodes need root")


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            desc = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
            if stat.S_ISLNK(st.st_mode):
                desc += " -> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                desc += " " + Path(p).read_text()
            elif stat.S_ISCHR(st.st_mode):
                desc += f" {st.st_rdev}"
            out[os.path.relpath(p, root)] = desc
    return out


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d" / "opaque").mkdir(parents=True)
    (src / "d" / "f").write_text("data")
    os.chmod(src / "d" / "f", 0o4755)
    (src / "owned").write_text("x")
    os.chown(src / "owned", 1000, 1000)
    os.symlink("/etc/passwd", src / "abs-link")
    os.link(src / "d" / "f", src / "hard")
    os.mkfifo(src / "fifo")
    os.mknod(src / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(src / "d" / "opaque", "trusted.overlay.opaque", b"y")
    buf = io.BytesIO()
    diff_id, digest, size = write_layer(src, buf)
    assert size == len(buf.getvalue()) and digest.startswith("sha256:") and diff_id != digest
    buf2 = io.BytesIO()
    assert write_layer(src, buf2) == (diff_id, digest, size)  # deterministic
    names = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(buf.getvalue()))}
    wh = names[".wh.gone"]
    assert wh.isreg() and wh.mode == 0 and wh.size == 0
    assert "d/opaque/.wh..wh..opq" in names
    assert names["hard"].islnk() or names["d/f"].islnk()
    dest = tmp_path / "dest"
    buf.seek(0)
    extract_layer(buf, dest)
    assert _tree(dest) == _tree(src)
    assert os.getxattr(dest / "d" / "opaque", "trusted.overlay.opaque") == b"y"
    assert os.stat(dest / "hard").st_ino == os.stat(dest / "d" / "f").st_ino


def _hostile_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        def add(name: str, data: bytes = b"pwned", **kw: object) -> None:
            ti = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(ti, k, v)
            ti.size = len(data) if ti.isreg() else 0
            t.addfile(ti, io.BytesIO(data) if ti.isreg() else None)

        add("../escape.txt")
        add("a/../../escape2")
        add("/usr/bin/x", b"ok")
        add("evil", type=tarfile.SYMTYPE, linkname="/")
        add("evil/tmp/pwned")
        add("evil/etc/pwned")
        add("up", type=tarfile.SYMTYPE, linkname="../../..")
        add("up/escape3")
        add("shadow", type=tarfile.LNKTYPE, linkname="/etc/shadow")
    return buf.getvalue()


def test_hostile_layer_writes_nothing_outside(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    snap = parent / "snapshots" / "1" / "fs"
    snap.mkdir(parents=True)
    before_outside = sorted(p for p in os.listdir(tmp_path))
    shadow = os.stat("/etc/shadow")
    with pytest.raises(UnsafeLayerError):
        extract_layer(io.BytesIO(_hostile_tar()), snap, "application/vnd.oci.image.layer.v1.tar")
    assert sorted(os.listdir(tmp_path)) == before_outside
    assert sorted(os.listdir(parent)) == ["snapshots"] and os.listdir(parent / "snapshots") == ["1"]
    assert not os.path.exists("/tmp/pwned") and not os.path.exists("/etc/pwned")
    after = os.stat("/etc/shadow")
    assert (after.st_ino, after.st_nlink, after.st_mtime) == (shadow.st_ino, shadow.st_nlink, shadow.st_mtime)
    # What did land, landed inside: escapes were clamped to the snapshot root.
    assert (snap / "escape.txt").read_bytes() == b"pwned"
    assert (snap / "usr" / "bin" / "x").read_bytes() == b"ok"
    assert (snap / "tmp" / "pwned").exists() and (snap / "escape3").exists()
