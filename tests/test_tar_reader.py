"""workbench.fsutil.tarread reads every member as tarfile does (differential), in any split of the stream; where
Go's archive/tar (BuildKit's) differs, as Go does: what it refuses, global pax headers, the ustar name prefix."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import IO

import pytest

from workbench.fsutil.tarread import TarReader

FIELDS = ("name", "linkname", "type", "mode", "uid", "gid", "size", "mtime", "devmajor", "devminor", "uname",
          "gname", "pax_headers")


class Pieces(io.RawIOBase):
    """`data` read back in pieces of random sizes (1 byte to 3 blocks, or whole MiBs)."""

    def __init__(self, data: bytes, seed: int, big: bool = False) -> None:
        self.data, self.at, self.rng, self.big = data, 0, random.Random(seed), big

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self.data) - self.at, self.rng.randint(1, 1 << 20 if self.big else 1536))
        buffer[:n] = self.data[self.at:self.at + n]
        self.at += n
        return n


def read_with_tarfile(data: bytes) -> list[tuple[object, ...]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        while (m := tar.next()) is not None:
            src = tar.extractfile(m) if m.isreg() else None
            digest = hashlib.sha256(src.read()).hexdigest() if src is not None else None
            out.append((*(getattr(m, f) for f in FIELDS), digest))
    return out


def read_with_reader(stream: IO[bytes], tmp_path: Path) -> list[tuple[object, ...]]:
    out = []
    reader = TarReader(stream)
    for n, m in enumerate(reader):
        digest = None
        if m.isreg() and n % 3:  # every third file's data is skipped, not copied
            path = tmp_path / "data"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                reader.copy_to(m, fd)
            finally:
                os.close(fd)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif m.isreg():
            digest = "skipped"
        out.append((*(getattr(m, f) for f in FIELDS), digest))
    return out


def same(expected: list[tuple[object, ...]], got: list[tuple[object, ...]]) -> None:
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        if have[-1] == "skipped":
            want = (*want[:-1], "skipped")
        assert have == want


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = 1_700_000_000
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def archive(fmt: int, rng: random.Random) -> bytes:
    """Every kind of member the format can hold, and data of awkward sizes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        tar.addfile(_info("d/", tarfile.DIRTYPE, mode=0o755, uid=1000, gid=1000, uname="u", gname="g"))
        for name, size in (("empty", 0), ("one", 1), ("block", 512), ("big", 3 * (1 << 20) + 7), ("odd", 1537)):
            tar.addfile(_info(f"d/{name}", size=size, mode=0o4755 if name == "one" else 0o600),
                        io.BytesIO(rng.randbytes(size)))
        deep = "/".join(["sub" + str(i) for i in range(15)]) + "/file-with-a-long-name"  # > 100: prefix or long
        tar.addfile(_info(f"d/{deep}", size=10), io.BytesIO(b"0123456789"))
        tar.addfile(_info("d/one-link", tarfile.LNKTYPE, linkname="d/one"))
        tar.addfile(_info("d/sym", tarfile.SYMTYPE, linkname="../" * 30 + "target"))
        tar.addfile(_info("d/chr", tarfile.CHRTYPE, devmajor=1, devminor=3))
        tar.addfile(_info("d/blk", tarfile.BLKTYPE, devmajor=8, devminor=1))
        tar.addfile(_info("d/fifo", tarfile.FIFOTYPE))
        tar.addfile(_info("d/contiguous", tarfile.CONTTYPE, size=700), io.BytesIO(rng.randbytes(700)))
        tar.addfile(_info("d/ünïcode", size=3), io.BytesIO(b"abc"))
        if fmt != tarfile.USTAR_FORMAT:
            tar.addfile(_info("d/" + "x" * 300, size=5), io.BytesIO(b"hello"))
            tar.addfile(_info("d/long-sym", tarfile.SYMTYPE, linkname="t" * 200))
            tar.addfile(_info("d/big-ids", size=2, uid=1 << 22, gid=(1 << 22) + 1), io.BytesIO(b"ok"))
            tar.addfile(_info("d/raw-\udcff-name", size=1), io.BytesIO(b"r"))
        if fmt == tarfile.PAX_FORMAT:
            info = _info("d/xattrs", size=4, mtime=1_700_000_000.25)
            info.pax_headers = {"SCHILY.xattr.user.k": "välue", "SCHILY.xattr.security.capability": "\udcff\udc80"}
            tar.addfile(info, io.BytesIO(b"xatt"))
        tar.addfile(_info("old-style-dir/", tarfile.AREGTYPE))
        tar.addfile(_info("last", size=9), io.BytesIO(b"the end.\n"))
    return out.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "gnu", "pax"])
def test_members_and_data_as_tarfile_reads_them(fmt: int, tmp_path: Path) -> None:
    data = archive(fmt, random.Random(fmt))
    expected = read_with_tarfile(data)
    assert len(expected) > 15
    same(expected, read_with_reader(io.BytesIO(data), tmp_path))
    for seed in range(3):
        same(expected, read_with_reader(io.BufferedReader(Pieces(data, seed)), tmp_path))
        same(expected, read_with_reader(Pieces(data, seed, big=True), tmp_path))  # raw: short reads


def test_ustar_prefix_and_old_style_directory_are_read(tmp_path: Path) -> None:
    names = [m[0] for m in read_with_reader(io.BytesIO(archive(tarfile.USTAR_FORMAT, random.Random(1))), tmp_path)]
    assert "d/" + "/".join(["sub" + str(i) for i in range(15)]) + "/file-with-a-long-name" in names
    assert "old-style-dir" in names


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("sparse_format", ["gnu", "posix"])
def test_a_sparse_member_is_refused_by_name(sparse_format: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "before").write_bytes(b"b" * 1000)
    with open(src / "holes", "wb") as f:
        f.truncate(5 << 20)
        f.seek(1 << 20)
        f.write(b"data in the middle")
    tar = tmp_path / "a.tar"
    subprocess.run(["tar", "--sparse", f"--format={sparse_format}", "-cf", str(tar), "-C", str(src),
                    "before", "holes"], check=True)
    reader = TarReader(io.BytesIO(tar.read_bytes()))
    assert next(iter(reader)).name == "before"
    with pytest.raises(tarfile.ReadError, match="holes: a sparse file"):
        list(reader)


def _two_files() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("a", "b"):
            tar.addfile(_info(name, size=1000), io.BytesIO(b"z" * 1000))
    return out.getvalue()


def _drain(data: bytes) -> None:
    reader = TarReader(io.BytesIO(data))
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        for m in reader:
            reader.copy_to(m, fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d[:300], "truncated header"),
    (lambda d: d[:512 + 700], "unexpected end of data"),  # in a's data
    (lambda d: d[:1536 + 100], "truncated header"),  # in b's header
    (lambda d: d[:1536] + b"X" + d[1537:], "bad checksum"),  # b's header: tarfile would end the archive there
])
def test_damaged_archives_are_refused(damage: object, message: str) -> None:
    data = _two_files()
    assert data[1536:1537] == b"b"  # b's header starts after a's header and its two blocks of data
    with pytest.raises(tarfile.ReadError, match=message):
        _drain(damage(data))  # type: ignore[operator]


def _raw_header(name: bytes, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name.decode())
    info.type, info.size = kind, size
    return info.tobuf(tarfile.USTAR_FORMAT)


def test_hostile_extended_headers_are_refused() -> None:
    huge = _raw_header(b"././@PaxHeader", tarfile.XHDTYPE, 64 << 20)
    with pytest.raises(tarfile.ReadError, match="more than"):
        _drain(huge + bytes(1024))
    record = b"30 path=short\n"  # says 30 bytes, has 14
    bad = _raw_header(b"././@PaxHeader", tarfile.XHDTYPE, len(record)) + record + bytes(512 - len(record))
    with pytest.raises(tarfile.ReadError, match="pax"):
        _drain(bad + _two_files())
    negative = b"11 size=-5\n"
    neg = _raw_header(b"././@PaxHeader", tarfile.XHDTYPE, len(negative)) + negative + bytes(512 - len(negative))
    with pytest.raises(tarfile.ReadError, match="negative size"):
        _drain(neg + _two_files())
    # a long name, then the end: as Go, the end (nothing to name)
    assert list(TarReader(io.BytesIO(_raw_header(b"././@LongLink", tarfile.GNUTYPE_LONGNAME, 3) + b"abc" +
                                     bytes(509) + bytes(1024)))) == []


def test_the_end_of_an_archive_as_go_reads_it() -> None:
    assert list(TarReader(io.BytesIO(bytes(10240)))) == []
    assert list(TarReader(io.BytesIO(b""))) == []
    data = _two_files()
    assert [m.name for m in TarReader(io.BytesIO(data[:1536] + bytes(1024) + b"garbage after the end"))] == ["a"]
    assert [m.name for m in TarReader(io.BytesIO(data[:1536] + bytes(512)))] == ["a"]  # one zero block, then EOF
    cut = _file(b"last", b"12345")
    assert [m.name for m in TarReader(io.BytesIO(cut[:512 + 100]))] == ["last"]  # ends in its padding: the end
    with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
        list(TarReader(io.BytesIO(cut[:512 + 3])))  # ends in its data
    with pytest.raises(tarfile.ReadError, match="zero block followed"):
        list(TarReader(io.BytesIO(data[:1536] + bytes(512) + data[1536:])))


def test_a_global_pax_header_changes_no_member_as_in_go() -> None:
    """tarfile would apply it to every member after it (here: one name and owner for all); Go's reader returns
    it as a header of its own, and containerd and moby skip that."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "hijacked", "uname": "global", "uid": "0"}) as tar:
        for name in ("a", "b"):
            tar.addfile(_info(name, size=1, uid=1000, uname="me"), io.BytesIO(b"z"))
    members = list(TarReader(io.BytesIO(out.getvalue())))
    assert [(m.name, m.uname, m.uid) for m in members] == [("a", "me", 1000), ("b", "me", 1000)]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r|") as tar:
        assert [m.name for m in tar] == ["hijacked", "hijacked"]  # what this reader does not do


def _with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_the_name_prefix_is_read_from_posix_ustar_headers_only() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_info("f", size=0))
    gnu = bytearray(out.getvalue()[:512])
    assert gnu[257:265] == b"ustar  \0"
    gnu[345:357] = b"15000000000\0"  # GNU keeps the access time there
    ustar = bytearray(gnu)
    ustar[257:265] = b"ustar\x0000"
    ustar[345:357] = b"some/prefix\0"
    go17 = bytearray(gnu)  # Go before 1.8 wrote a prefix into GNU headers: Go still reads it, when it is no time
    go17[345:357] = b"pre/fix\0\0\0\0\0"
    for header, name in ((gnu, "f"), (ustar, "some/prefix/f"), (go17, "pre/fix/f")):
        assert [m.name for m in TarReader(io.BytesIO(_with_checksum(header) + bytes(1024)))] == [name]


def _header(name: bytes = b"f", kind: bytes = b"0", size: bytes = b"0", **raw: bytes) -> bytes:
    """One header block with the given raw fields (padded with NULs) and a right checksum."""
    at = {"mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12), "mtime": (136, 12),
          "linkname": (157, 100), "magic": (257, 8), "devmajor": (329, 8), "devminor": (337, 8)}
    fields = {"mode": b"0000644", "uid": b"0001750", "gid": b"0001750", "mtime": b"14000000000",
              "magic": b"ustar\x0000", "size": size, **raw}
    block = bytearray(512)
    block[0:len(name)] = name
    block[156:157] = kind
    for key, value in fields.items():
        start, width = at[key]
        block[start:start + width] = value.ljust(width, b"\0")[:width]
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _rec(pair: bytes) -> bytes:
    """One pax record, its length right."""
    n = len(pair) + 2
    n += len(str(n + len(str(n))))
    return b"%d %s\n" % (n, pair)


def _pax(records: bytes, kind: bytes = b"x") -> bytes:
    return _header(b"pax", kind, b"%o" % len(records)) + records + bytes(-len(records) % 512)


def _file(name: bytes, data: bytes, **raw: bytes) -> bytes:
    return _header(name, b"0", b"%o" % len(data), **raw) + data + bytes(-len(data) % 512)


def _members(data: bytes) -> list[tuple[str, int, int, int]]:
    return [(m.name, m.size, m.uid, m.mode) for m in TarReader(io.BytesIO(data + bytes(1024)))]


def test_numbers_are_read_as_go_reads_them() -> None:
    """A size with leading NULs is 1000 to Go: read as 0 (tarfile's way), a hidden member would follow it."""
    hidden = _file(b"evil", b"#!", mode=b"4755", uid=b"0")
    assert len(hidden) == 1024
    assert _members(_header(b"f", size=b"\0\0\0\x001750") + hidden) == [("f", 1000, 1000, 0o644)]  # data, not a file
    assert _members(_header(b"f", uid=b"\0\x0012")) == [("f", 0, 10, 0o644)]
    assert _members(_header(b"f", uid=b"  12 \0")) == [("f", 0, 10, 0o644)]
    assert _members(_header(b"f", uid=b"\x80\0\0\0\0\0\x01\0")) == [("f", 0, 256, 0o644)]  # base-256
    for bad in (b"+12", b"1_2", b"-10", b"19", b"1 2"):
        with pytest.raises(tarfile.ReadError, match="octal"):
            _members(_header(b"f", uid=bad))
    with pytest.raises(tarfile.ReadError, match="out of range"):
        _members(_header(b"f", mode=b"\xff" * 8))  # base-256 -1
    with pytest.raises(tarfile.ReadError, match="out of range"):
        _members(_pax(_rec(b"uid=4294967296123")) + _header(b"f"))
    with pytest.raises(tarfile.ReadError, match="negative"):
        _members(_header(b"././@LongLink", b"L", b"\xff" * 12))  # no hang reading backwards


def test_pax_records_are_read_as_go_reads_them() -> None:
    assert _members(_pax(_rec(b"size=") + _rec(b"uid=77")) + _file(b"f", b"abc")) == [("f", 3, 77, 0o644)]
    later = _pax(_rec(b"path=first")) + _pax(_rec(b"path=second")) + _header(b"f")
    assert _members(later)[0][0] == "second"  # the last extended header, not the first
    long_name = _header(b"././@LongLink", b"L", b"4") + b"long" + bytes(508)
    assert _members(_pax(_rec(b"path=paxed")) + long_name + _header(b"f"))[0][0] == "long"
    assert _members(long_name + _pax(_rec(b"path=paxed")) + _header(b"f"))[0][0] == "long"
    assert _members(_pax(_rec(b"path=")) + _header(b"kept"))[0][0] == "kept"
    mtime = TarReader(io.BytesIO(_pax(_rec(b"mtime=1700000000.250000")) + _header(b"f") + bytes(1024)))
    assert next(iter(mtime)).mtime == 1700000000.25
    for bad in (_rec(b"mtime=nan"), _rec(b"path=a\0b/c"), _rec(b"size=-5"), _rec(b"uid=0x1"), _rec(b"noeq"),
                b"99 path=x\n", _rec(b"uid=12") + b"\0\0\0", _rec(b"mtime=.5")):
        with pytest.raises(tarfile.ReadError, match="pax|negative size"):
            _members(_pax(bad) + _header(b"f"))


def test_member_types_containerd_does_not_handle_are_refused() -> None:
    for kind in (b"V", b"X", b"D", b"M", b"N"):
        with pytest.raises(tarfile.ReadError, match="unhandled tar member type"):
            _members(_header(b"x", kind, b"4") + b"data" + bytes(508))
    assert [m.type for m in TarReader(io.BytesIO(_header(b"d/", b"\0") + bytes(1024)))] == [tarfile.DIRTYPE]
    long_dir = _header(b"././@LongLink", b"L", b"5") + b"long/" + bytes(507) + _header(b"x", b"\0")
    assert [(m.name, m.type) for m in TarReader(io.BytesIO(long_dir + bytes(1024)))] == [("long", tarfile.DIRTYPE)]


def test_a_v7_header_has_no_device_numbers_and_no_prefix() -> None:
    for magic in (b"\0" * 8, b"ustar \x80\0", b"ustar.00"):  # none, GNU's with a wrong version, garbled
        v7 = _header(b"dev", b"3", magic=magic, devmajor=b"zz", devminor=b"3")  # not read: no error
        assert [(m.devmajor, m.devminor) for m in TarReader(io.BytesIO(v7 + bytes(1024)))] == [(0, 0)]
    ustar = _header(b"dev", b"3", devmajor=b"1", devminor=b"3")
    assert [(m.devmajor, m.devminor) for m in TarReader(io.BytesIO(ustar + bytes(1024)))] == [(1, 3)]
