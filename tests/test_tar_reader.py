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
        tar.addfile(_info("d/volume", b"V", size=600), io.BytesIO(rng.randbytes(600)))  # unknown: data skipped
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
def test_a_sparse_member_and_the_rest_are_read_by_tarfile(sparse_format: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "before").write_bytes(b"b" * 1000)
    with open(src / "holes", "wb") as f:
        f.truncate(5 << 20)
        f.seek(1 << 20)
        f.write(b"data in the middle")
    (src / "zafter").write_bytes(b"after the sparse file")
    tar = tmp_path / "a.tar"
    subprocess.run(["tar", "--sparse", f"--format={sparse_format}", "-cf", str(tar), "-C", str(src),
                    "before", "holes", "zafter"], check=True)
    data = tar.read_bytes()
    expected = read_with_tarfile(data)
    assert [m[0] for m in expected] == ["before", "holes", "zafter"]
    got = read_with_reader(io.BufferedReader(Pieces(data, 7)), tmp_path)
    assert [m[0] for m in got] == ["before", "holes", "zafter"]
    assert got[1][-1] == expected[1][-1] == hashlib.sha256((src / "holes").read_bytes()).hexdigest()
    assert got[2][-1] == expected[2][-1]


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
    (lambda d: b"", "empty file"),
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
    with pytest.raises(tarfile.ReadError, match="end of the archive"):
        _drain(_raw_header(b"././@LongLink", tarfile.GNUTYPE_LONGNAME, 3) + b"abc" + bytes(509) + bytes(1024))


def test_a_zero_block_ends_the_archive_and_an_all_zero_stream_is_empty() -> None:
    assert list(TarReader(io.BytesIO(bytes(10240)))) == []
    data = _two_files()
    assert [m.name for m in TarReader(io.BytesIO(data[:1536] + bytes(1024) + b"garbage after the end"))] == ["a"]


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
    for header, name in ((gnu, "f"), (ustar, "some/prefix/f")):
        assert [m.name for m in TarReader(io.BytesIO(_with_checksum(header) + bytes(1024)))] == [name]
