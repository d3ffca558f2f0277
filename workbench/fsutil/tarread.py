"""A streaming tar reader for extraction that reads headers as Go's archive/tar does, at a fraction of `tarfile`'s
cost.

BuildKit extracts layers (containerd) and ADD archives (moby) with Go's archive/tar; this reads a tar as that
reader does, so that a hostile archive cannot show one set of files to BuildKit and another to us: numeric
fields (octal with leading and trailing NULs or spaces, or base-256) and pax values parsed as strictly, the
last of several pax or GNU long-name headers kept and a long name applied over a pax path, an empty pax value
leaving the header's, a global pax header changing nothing (containerd and moby skip it), the ustar name
prefix read from ustar headers only, two zero blocks (or the end of the stream after one) ending the archive.
What Go refuses is a `tarfile.ReadError` here: a bad checksum, a number that does not parse, a negative size, a
malformed pax record. What containerd and moby refuse too: a member type they do not handle, an owner outside
uid_t, a GNU sparse file (read by Go, rare: Go's writers never make one; refused here, not expanded). Extended
headers are read up to 1 MiB, as in Go.

`tarfile` in stream mode spent ~30 µs of Python on each member's header and read its data through two more
layers of buffering: for a layer of 48,000 files that was seconds of the thread that makes the files. This
parses a header from one block of a 1 MiB buffer and hands a file's data to `copy_to` as slices of it. Members
are `tarfile.TarInfo` objects with the fields extraction uses.
"""

from __future__ import annotations

import re
import struct
import tarfile
from collections.abc import Iterator
from typing import IO

from workbench.fsutil.destination import write_all

_BLOCK = 512
_CHUNK = 1 << 20
_ZERO_BLOCK = bytes(_BLOCK)
_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")
"""name, mode, uid, gid, size, mtime, checksum, type, linkname, magic, version, uname, gname, devmajor, devminor,
prefix"""
_USTAR, _GNU = b"ustar\0", b"ustar "
_MAX_EXTENDED = 1 << 20
"""The largest pax or GNU long-name header read (Go's archive/tar's limit)."""
_MEMBER_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE,
                           tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE})
_DATA_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})
_OCTAL_DIGITS = b"01234567"
_DECIMAL = re.compile(rb"[+-]?[0-9]+")
_NUL_FREE_KEYS = frozenset({"path", "linkpath", "uname", "gname"})
_MAX_ID = (1 << 32) - 1


def _cut(data: bytes) -> bytes:
    """`data` up to its first NUL."""
    end = data.find(0)
    return data if end < 0 else data[:end]


def _text(field: bytes) -> str:
    """A string field (or a GNU long name's data): up to its first NUL, as UTF-8 with surrogateescape."""
    return _cut(field).decode("utf-8", "surrogateescape")


def _numeric(field: bytes) -> int:
    """A numeric header field as Go reads it: base-256 when its first byte has the high bit (the next bit the
    sign), else octal digits between leading and trailing NULs and spaces (none: 0), cut at a NUL inside."""
    if field[0] & 0x80:
        invert = 0xFF if field[0] & 0x40 else 0
        value = 0
        for i, byte in enumerate(field):
            byte ^= invert
            if i == 0:
                byte &= 0x7F
            if value >> 56:
                raise tarfile.ReadError("invalid header: a base-256 number overflows")
            value = value << 8 | byte
        if value >> 63:
            raise tarfile.ReadError("invalid header: a base-256 number overflows")
        return ~value if invert else value
    digits = field.strip(b" \0")
    if not digits.isdigit():  # anything but plain digits (the usual case): cut at a NUL, then only 0-7
        digits = _cut(digits)
        if not digits:
            return 0
        if digits.translate(None, _OCTAL_DIGITS):
            raise tarfile.ReadError(f"invalid header: {field!r} is not an octal number")
    try:
        value = int(digits, 8)
    except ValueError:  # an 8 or a 9
        raise tarfile.ReadError(f"invalid header: {field!r} is not an octal number") from None
    if value >> 63:
        raise tarfile.ReadError(f"invalid header: {field!r} overflows")
    return value


def _decimal(key: str, value: bytes) -> int:
    """A pax integer, as Go's strconv.ParseInt(value, 10, 64)."""
    if not _DECIMAL.fullmatch(value) or not -(1 << 63) <= (number := int(value)) < 1 << 63:
        raise tarfile.ReadError(f"invalid pax header: {key}={value!r}")
    return number


def _pax_time(key: str, value: bytes) -> float:
    """A pax time, as Go's parsePAXTime: whole seconds, then optionally a '.' and digits."""
    whole, dot, fraction = value.partition(b".")
    seconds = _decimal(key, whole)
    if dot and fraction and not fraction.isdigit():
        raise tarfile.ReadError(f"invalid pax header: {key}={value!r}")
    nanos = int((fraction + b"000000000")[:9]) if fraction else 0
    return seconds - nanos / 1e9 if whole.startswith(b"-") else seconds + nanos / 1e9


class TarReader:
    """The members of the tar `stream`, read once, in order: iterate it for each member, and call `copy_to`
    for a regular file's data (data not copied is skipped)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buf: bytes = b""
        self.pos = 0
        self.unread = 0  # data of the current member not read yet
        self.pad = 0  # and the padding after it

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while (member := self._next()) is not None:
            yield member

    def copy_to(self, member: tarfile.TarInfo, fd: int) -> None:
        """Write `member`'s data (the member just yielded) to `fd`."""
        left = member.size
        while left:
            if self.pos >= len(self.buf) and not self._refill():
                raise tarfile.ReadError("unexpected end of data")
            n = min(left, len(self.buf) - self.pos)
            write_all(fd, memoryview(self.buf)[self.pos:self.pos + n])
            self.pos += n
            left -= n
        self.unread -= member.size

    # --- reading ---------------------------------------------------------------------------------------------

    def _refill(self) -> bool:
        """The next chunk of the stream in `buf` (what was left of `buf` is dropped); False at its end."""
        chunk = self.stream.read(_CHUNK)
        self.buf, self.pos = chunk or b"", 0
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        """The next `n` bytes (fewer at the end of the stream)."""
        end = self.pos + n
        if end <= len(self.buf):
            self.pos = end
            return self.buf[end - n:end]
        parts = [self.buf[self.pos:]]
        have = len(parts[0])
        while have < n and self._refill():
            piece = self.buf[:n - have]
            self.pos = len(piece)
            parts.append(piece)
            have += len(piece)
        return b"".join(parts)

    def _skip(self, n: int) -> bool:
        """Skip `n` bytes; False if the stream ends first."""
        while n:
            if self.pos >= len(self.buf) and not self._refill():
                return False
            step = min(n, len(self.buf) - self.pos)
            self.pos += step
            n -= step
        return True

    def _data(self, size: int) -> bytes:
        """An extended header's data (`size` bytes, and its padding)."""
        if not 0 <= size <= _MAX_EXTENDED:  # as Go's archive/tar: never held in memory whole
            raise tarfile.ReadError(f"an extended header of {size} bytes (more than {_MAX_EXTENDED}, or negative)")
        data = self._take(size)
        if len(data) < size:
            raise tarfile.ReadError("unexpected end of data")
        self._skip(-size % _BLOCK)  # the stream may end here: then so does the archive, as in Go
        return data

    # --- headers -----------------------------------------------------------------------------------------------

    def _next(self) -> tarfile.TarInfo | None:
        """The next member, its extended headers applied, or None at the end of the archive."""
        if self.unread and not self._skip(self.unread):
            raise tarfile.ReadError("unexpected end of data")
        if self.pad and not self._skip(self.pad):  # the stream ends in the last member's padding: as Go, the end
            return None
        self.unread = self.pad = 0
        pax: dict[str, bytes] = {}
        long_name = long_link = ""
        while True:
            block = self._take(_BLOCK)
            if not block:
                return None  # the end of the stream between headers: the end, as for Go
            if len(block) < _BLOCK:
                raise tarfile.ReadError("truncated header")
            if block == _ZERO_BLOCK:
                after = self._take(_BLOCK)
                if after and after != _ZERO_BLOCK:
                    raise tarfile.ReadError("a zero block followed by a non-zero one")
                return None
            member = self._parse(block)
            kind = member.type
            if kind == tarfile.GNUTYPE_LONGNAME:
                long_name = _text(self._data(member.size))
            elif kind == tarfile.GNUTYPE_LONGLINK:
                long_link = _text(self._data(member.size))
            elif kind == tarfile.XHDTYPE:
                pax = self._pax(self._data(member.size))  # a later one replaces an earlier one, as in Go
            elif kind == tarfile.XGLTYPE:
                self._pax(self._data(member.size))  # checked, then applied to nothing (see the module)
            else:
                break
        name = member.name
        if pax:
            self._apply_pax(member, pax)
        if long_name:
            member.name = long_name
        if long_link:
            member.linkname = long_link
        if kind == tarfile.AREGTYPE:  # V7's directory: a regular file whose (final) name ends in "/"
            if member.name.endswith("/"):
                member.type = kind = tarfile.DIRTYPE
        elif kind == tarfile.GNUTYPE_SPARSE or any(k.startswith("GNU.sparse.") for k in member.pax_headers):
            shown = member.pax_headers.get("GNU.sparse.name") or member.name or name
            raise tarfile.ReadError(f"{shown}: a sparse file (GNU sparse tar member): not supported")
        elif kind not in _MEMBER_TYPES:  # Go reads it; containerd and moby refuse it
            raise tarfile.ReadError(f"{member.name}: unhandled tar member type {kind!r}")
        if kind == tarfile.DIRTYPE:
            member.name = member.name.rstrip("/")
        if member.size < 0:
            raise tarfile.ReadError(f"{member.name}: negative size {member.size}")
        if not (0 <= member.uid <= _MAX_ID and 0 <= member.gid <= _MAX_ID and 0 <= member.mode <= 0o7777777):
            raise tarfile.ReadError(f"{member.name}: owner {member.uid}:{member.gid} or mode {member.mode:o} "
                                    "out of range")
        if kind in _DATA_TYPES:
            self.unread, self.pad = member.size, -member.size % _BLOCK
        return member

    @staticmethod
    def _parse(block: bytes) -> tarfile.TarInfo:
        """One header block, as Go reads it: owner names and device numbers from ustar and GNU headers only (V7
        has none), the name prefix from ustar ones only (GNU keeps times there)."""
        (name, mode, uid, gid, size, mtime, checksum, kind, linkname, magic, version, uname, gname, major, minor,
         prefix) = _FIELDS.unpack_from(block)
        stored = _numeric(checksum)
        if stored != 256 + sum(block) - sum(checksum) and stored != 256 + sum(
                b - 256 if b > 127 else b for b in block[:148] + block[156:]):
            raise tarfile.ReadError("bad checksum")
        member = tarfile.TarInfo.__new__(tarfile.TarInfo)
        member.name = _text(name)
        member.linkname = _text(linkname)
        member.mode, member.uid, member.gid, member.size, member.mtime = (
            _numeric(mode), _numeric(uid), _numeric(gid), _numeric(size), _numeric(mtime))
        member.type = kind
        member.pax_headers = {}
        ustar, gnu = magic == _USTAR, magic == _GNU and version == b" \0"
        if ustar or gnu:
            member.uname, member.gname = _text(uname), _text(gname)
            member.devmajor, member.devminor = _numeric(major), _numeric(minor)
        else:
            member.uname = member.gname = ""
            member.devmajor = member.devminor = 0
        if prefix[0] and (ustar or gnu and _go_1_7_prefix(prefix)) and (text := _text(prefix)):
            member.name = text + "/" + member.name
        return member

    @staticmethod
    def _pax(data: bytes) -> dict[str, bytes]:
        """The records of a pax header, as Go's parsePAX reads them (anything else in it is an error)."""
        records: dict[str, bytes] = {}
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos, pos + 21)
            length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else 0
            end = pos + length
            if length < 5 or end > len(data) or space + 1 >= end or data[end - 1:end] != b"\n":
                raise tarfile.ReadError("invalid pax header record")
            key, eq, value = data[space + 1:end - 1].partition(b"=")
            text = key.decode("utf-8", "surrogateescape")
            if not eq or not key or 0 in (value if text in _NUL_FREE_KEYS else key):
                raise tarfile.ReadError(f"invalid pax header record {data[pos:end]!r}")
            records[text] = value
            pos = end
        return records

    @staticmethod
    def _apply_pax(member: tarfile.TarInfo, records: dict[str, bytes]) -> None:
        """Pax `records` over `member`'s fields, as Go's mergePAX: an empty value keeps the header's."""
        for key, value in records.items():
            if not value:
                continue
            if key == "path":
                member.name = value.decode("utf-8", "surrogateescape")
            elif key == "linkpath":
                member.linkname = value.decode("utf-8", "surrogateescape")
            elif key in ("uname", "gname"):
                setattr(member, key, value.decode("utf-8", "surrogateescape"))
            elif key in ("uid", "gid", "size"):
                setattr(member, key, _decimal(key, value))
            elif key == "mtime":
                member.mtime = _pax_time(key, value)
            elif key in ("atime", "ctime"):
                _pax_time(key, value)  # checked, as Go does, and not used
        member.pax_headers = {k: v.decode("utf-8", "surrogateescape") for k, v in records.items()}


def _go_1_7_prefix(field: bytes) -> bool:
    """Whether a GNU header's atime and ctime do not parse and the field is ASCII: then Go reads it as a ustar
    name prefix (Go before 1.8 wrote one there)."""
    try:
        _numeric(field[:12])
        _numeric(field[12:24])
    except tarfile.ReadError:
        return _cut(field).isascii()
    return False

