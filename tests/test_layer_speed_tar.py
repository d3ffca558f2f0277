"""The layer writer's own ustar headers (its fast path) are byte for byte the headers `tarfile` writes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from workbench.snapshot import layers
from workbench.snapshot.layers import write_layer


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.uname, ti.gname = kind, "", ""
    for key, value in fields.items():
        setattr(ti, key, value)
    return ti


COMMON = [
    _info("a"),
    _info("d/f.py", size=4093, mode=0o4755, uid=1000, gid=1000, mtime=1_700_000_000),
    _info("n" * 100, size=512),
    _info("d" * 99, tarfile.DIRTYPE, mode=0o1777),  # 100 bytes with the slash
    _info("already/", tarfile.DIRTYPE),
    _info("link", tarfile.SYMTYPE, linkname="t" * 100),
    _info("hard", tarfile.LNKTYPE, linkname="d/f.py"),
    _info(".wh.gone", mode=0),
    _info("fifo", tarfile.FIFOTYPE),
    _info("max", size=8 ** 11 - 1, uid=8 ** 7 - 1, gid=8 ** 7 - 1, mtime=8 ** 11 - 1),
]
NEEDS_PAX = [
    _info("l" * 101),
    _info("e" * 100, tarfile.DIRTYPE),  # 101 with the slash
    _info("ünï"),
    _info("bad\udcff"),
    _info("s", tarfile.SYMTYPE, linkname="t" * 101),
    _info("s", tarfile.SYMTYPE, linkname="ü"),
    _info("uid", uid=8 ** 7),
    _info("size", size=8 ** 11),
    _info("old", mtime=-5),
    _info("float", mtime=1.5),
    _info("x", pax_headers={"SCHILY.xattr.user.k": "v"}),
    _info("owner", uname="root"),
    _info("chr", tarfile.CHRTYPE, devmajor=1, devminor=3),
]


def _tarfiles(ti: tarfile.TarInfo) -> bytes:
    return ti.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


@pytest.mark.parametrize("ti", COMMON, ids=lambda ti: ti.name[:12])
def test_common_entries_get_tarfiles_header_without_tarfile(ti: tarfile.TarInfo) -> None:
    assert layers._ustar_header(ti) == _tarfiles(ti)


@pytest.mark.parametrize("ti", NEEDS_PAX, ids=lambda ti: ti.name[:12].encode("ascii", "replace").decode())
def test_entries_that_need_a_pax_record_are_left_to_tarfile(ti: tarfile.TarInfo) -> None:
    assert layers._ustar_header(ti) is None
    stream = layers._TarStream(io.BytesIO())
    stream.add(ti)  # through tobuf: the pax record is there
    assert stream.stream.getvalue() == _tarfiles(ti)  # type: ignore[attr-defined]


@pytest.mark.skipif(os.geteuid() != 0, reason="owners, device nodes and trusted.* xattrs need root")
def test_a_layer_is_the_tar_tarfile_would_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "d" / "opaque").mkdir(parents=True)
    (src / "d" / "opaque" / "inside").write_text("in")
    os.setxattr(src / "d" / "opaque", "trusted.overlay.opaque", b"y")
    (src / "d" / "f").write_bytes(b"x" * 1000)
    os.link(src / "d" / "f", src / "hard")
    (src / ("n" * 100)).write_bytes(b"y" * 512)
    (src / ("l" * 101)).write_bytes(b"z" * 513)
    (src / "ünï").write_text("u")
    os.symlink("t" * 101, src / "long-link")
    (src / "x").write_text("x")
    os.setxattr(src / "x", "user.k", b"v")
    (src / "uid").write_text("u")
    os.chown(src / "uid", 2 ** 21, 5)
    os.mknod(src / "gone", stat.S_IFCHR, 0)
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (src / "big").write_bytes(os.urandom(3 << 20))
    fast = io.BytesIO()
    write_layer(src, fast, "none")
    monkeypatch.setattr(layers, "_ustar_header", lambda ti: None)  # every header from tarfile's tobuf
    slow = io.BytesIO()
    write_layer(src, slow, "none")
    data = fast.getvalue()
    assert data == slow.getvalue()
    assert len(data) % tarfile.RECORDSIZE == 0 and data[-2 * tarfile.BLOCKSIZE:] == bytes(2 * tarfile.BLOCKSIZE)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar}
        assert tar.extractfile(members["l" * 101]).read() == b"z" * 513  # type: ignore[union-attr]
    assert members["uid"].uid == 2 ** 21 and members["long-link"].linkname == "t" * 101
    assert members["hard"].islnk() and members[".wh.gone"].size == 0 and members["null"].ischr()
    assert members["x"].pax_headers["SCHILY.xattr.user.k"] == "v" and "ünï" in members
