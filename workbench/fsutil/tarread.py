"""A streaming tar reader for extraction, with `tarfile`'s reading of headers at a fraction of its cost.

`tarfile` in stream mode spends ~30 µs of Python on each member's header and reads its data through two more
layers of buffering: for a layer of 48,000 files that is seconds of the one thread that makes the files. This
reader parses a header from one 512-byte block of a 1 MiB buffer and hands a file's data to `copy_to` as
slices of that buffer. Members are `tarfile.TarInfo` objects with the fields extraction uses, read as `tarfile`
reads them: old-style directories, base-256 numbers, GNU long names and links, pax headers (values decoded as
UTF-8 with surrogateescape, applied in the same order).

Where `tarfile` and Go's archive/tar (which BuildKit extracts with, through containerd and moby) differ, this
reads as Go does: a header that does not check out after the first member, a pax record that does not parse, a
negative size or an extended header over 1 MiB is an error (`tarfile.ReadError`), where `tarfile` ends the
archive without a word or reads it all into memory; a global pax header changes no member (`tarfile` applies
it to all that follow); the name prefix is read from POSIX ustar headers only (a GNU header keeps times
there). A GNU sparse member (rare; Go's writers never make one) hands the rest of the archive, from that
member's first header on, to `tarfile`, which reads sparse files.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tarfile
from collections.abc import Iterator
from typing import IO

_BLOCK = 512
_CHUNK = 1 << 20
_ZERO_BLOCK = bytes(_BLOCK)
_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")
"""name, mode, uid, gid, size, mtime, checksum, type, linkname, magic, version, uname, gname, devmajor, devminor,
prefix"""
_USTAR = b"ustar\0"
_MAX_EXTENDED = 1 << 20
"""The largest pax or GNU long-name header read (Go's archive/tar's limit)."""
_REGULAR = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE})
_SUPPORTED = frozenset(tarfile.SUPPORTED_TYPES)
_GNU_TYPES = frozenset(tarfile.GNU_TYPES)
_PAX_LOCAL = frozenset({tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE})
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_PAX_NUMBERS = {"mtime": float, "uid": int, "gid": int, "size": int}
_PAX_TEXT = {"path": "name", "linkpath": "linkname", "uname": "uname", "gname": "gname"}


class _Sparse(Exception):
    """A GNU sparse member: `tarfile` reads the rest."""


def _text(field: bytes) -> str:
    end = field.find(0)
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 (GNU) when its first byte has the high bit."""
    if field[0] in (0o200, 0o377):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0o377 else n
    end = field.find(0)
    digits = (field if end < 0 else field[:end]).strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise tarfile.ReadError("invalid header") from None


class TarReader:
    """The members of the tar `stream`, read once, in order: iterate it for each member, and call `copy_to`
    for a regular file's data (data not copied is skipped)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buf: bytes = b""
        self.pos = 0
        self.unread = 0  # data and padding of the current member not read yet
        self.members_read = 0
        self.tar: tarfile.TarFile | None = None

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            try:
                member = self._next()
            except _Sparse as sparse:
                yield from self._rest_by_tarfile(sparse.args[0])
                return
            if member is None:
                return
            self.members_read += 1
            yield member

    def copy_to(self, member: tarfile.TarInfo, fd: int) -> None:
        """Write `member`'s data (the member just yielded) to `fd`."""
        if self.tar is not None:
            src = self.tar.extractfile(member)
            if src is not None:
                while chunk := src.read(_CHUNK):
                    _write_all(fd, memoryview(chunk))
            return
        left = member.size
        while left:
            if self.pos >= len(self.buf) and not self._refill():
                raise tarfile.ReadError("unexpected end of data")
            n = min(left, len(self.buf) - self.pos)
            _write_all(fd, memoryview(self.buf)[self.pos:self.pos + n])
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

    def _skip(self, n: int) -> None:
        while n:
            if self.pos >= len(self.buf) and not self._refill():
                raise tarfile.ReadError("unexpected end of data")
            step = min(n, len(self.buf) - self.pos)
            self.pos += step
            n -= step

    def _data(self, size: int) -> bytes:
        """An extended header's data (`size` bytes, and its padding)."""
        if size > _MAX_EXTENDED:  # as Go's archive/tar: never held in memory whole
            raise tarfile.ReadError(f"an extended header of {size} bytes (more than {_MAX_EXTENDED})")
        data = self._take(size + (-size % _BLOCK))
        if len(data) < size + (-size % _BLOCK):
            raise tarfile.ReadError("unexpected end of data")
        return data[:size]

    # --- headers -----------------------------------------------------------------------------------------------

    def _next(self) -> tarfile.TarInfo | None:
        """The next member, its extended headers applied, or None at the end of the archive."""
        if self.unread:
            self._skip(self.unread)
            self.unread = 0
        pending: list[tuple[bytes, str | dict[str, str]]] = []  # extended headers, in order, applied innermost first
        raw: list[bytes] = []
        while True:
            block = self._take(_BLOCK)
            if len(block) < _BLOCK:
                if pending:
                    raise tarfile.ReadError("unexpected end of data")
                if not block and self.members_read:  # no end-of-archive blocks: an end all readers accept
                    return None
                raise tarfile.ReadError("empty file" if not block else "truncated header")
            if block == _ZERO_BLOCK:
                if pending:
                    raise tarfile.ReadError("an extended header is followed by the end of the archive")
                return None
            member = self._parse(block)
            raw.append(block)
            kind = member.type
            if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                data = self._data(member.size)
                raw.append(data + bytes(-len(data) % _BLOCK))
                pending.append((kind, _text(data)))
            elif kind in _PAX_LOCAL or kind == tarfile.XGLTYPE:
                data = self._data(member.size)
                raw.append(data + bytes(-len(data) % _BLOCK))
                records = self._pax(data, {})  # checked either way
                if kind == tarfile.XGLTYPE:  # applies to nothing, as in Go's reader, containerd and moby
                    del raw[-2:]
                else:
                    pending.append((kind, records))
            elif kind == tarfile.GNUTYPE_SPARSE:
                raise _Sparse(b"".join(raw))
            else:
                break
        for kind, value in reversed(pending):
            if isinstance(value, dict):
                self._apply_pax(member, value)
            elif kind == tarfile.GNUTYPE_LONGNAME:
                member.name = value.removesuffix("/") if member.isdir() else value
            else:
                member.linkname = value
        if any(k.startswith("GNU.sparse.") for k in member.pax_headers):
            raise _Sparse(b"".join(raw))
        if member.size < 0:
            raise tarfile.ReadError(f"{member.name}: negative size {member.size}")
        if member.type in _REGULAR or member.type not in _SUPPORTED:
            self.unread = member.size + (-member.size % _BLOCK)
        return member

    @staticmethod
    def _parse(block: bytes) -> tarfile.TarInfo:
        """One header block, as `tarfile.TarInfo.frombuf` reads it."""
        (name, mode, uid, gid, size, mtime, checksum, kind, linkname, magic, _, uname, gname, major, minor,
         prefix) = _FIELDS.unpack_from(block)
        try:  # the usual octal text; anything else is read as tarfile reads it
            stored = int(checksum.rstrip(b" \0"), 8)
        except ValueError:
            stored = _number(checksum)
        if stored != 256 + sum(block) - sum(checksum) and stored != 256 + sum(
                b - 256 if b > 127 else b for b in block[:148] + block[156:]):
            raise tarfile.ReadError("bad checksum")
        member = tarfile.TarInfo.__new__(tarfile.TarInfo)
        member.name = _text(name)
        member.linkname = _text(linkname)
        member.uname = _text(uname)
        member.gname = _text(gname)
        try:
            member.mode, member.uid, member.gid, member.size, member.mtime = (
                int(mode.rstrip(b" \0"), 8), int(uid.rstrip(b" \0"), 8), int(gid.rstrip(b" \0"), 8),
                int(size.rstrip(b" \0"), 8), int(mtime.rstrip(b" \0"), 8))
        except ValueError:
            member.mode, member.uid, member.gid, member.size, member.mtime = map(_number, (mode, uid, gid, size, mtime))
        member.devmajor, member.devminor = _number(major), _number(minor)
        member.type = kind
        member.pax_headers = {}
        if kind == tarfile.AREGTYPE and member.name.endswith("/"):
            member.type = kind = tarfile.DIRTYPE
        if kind == tarfile.DIRTYPE:
            member.name = member.name.rstrip("/")
        # the prefix of a POSIX ustar name; a GNU header keeps times there, a V7 one nothing (as Go reads them)
        if magic == _USTAR and kind not in _GNU_TYPES and prefix[0] and (text := _text(prefix)):
            member.name = text + "/" + member.name
        return member

    @staticmethod
    def _pax(data: bytes, into: dict[str, str]) -> dict[str, str]:
        """The records of a pax header's `data` added to `into` (returned)."""
        pos = 0
        while match := _PAX_RECORD.match(data, pos):
            length = int(match.group(1))
            end = match.start(1) + length
            if length == 0 or end > len(data) or data[end - 1:end] != b"\n":
                raise tarfile.ReadError("invalid pax header record")
            key = match.group(2).decode("utf-8", "surrogateescape")
            into[key] = data[match.end():end - 1].decode("utf-8", "surrogateescape")
            pos = end
        if data[pos:].strip(b"\0"):
            raise tarfile.ReadError("invalid pax header record")
        return into

    @staticmethod
    def _apply_pax(member: tarfile.TarInfo, headers: dict[str, str]) -> None:
        """Pax `headers` over `member`'s fields, as `tarfile` applies them."""
        for key, value in headers.items():
            if key in _PAX_TEXT:
                setattr(member, _PAX_TEXT[key], value.rstrip("/") if key == "path" else value)
            elif key in _PAX_NUMBERS:
                try:
                    setattr(member, key, _PAX_NUMBERS[key](value))
                except ValueError:
                    setattr(member, key, 0)
        member.pax_headers = dict(headers)

    # --- the rest by tarfile -------------------------------------------------------------------------------------

    def _rest_by_tarfile(self, raw: bytes) -> Iterator[tarfile.TarInfo]:
        """The members from a sparse one on, read by `tarfile` from the global headers seen, the member's own
        headers, and the rest of the stream."""
        replay = _Replay([raw, self.buf[self.pos:]], self.stream)
        self.tar = tarfile.open(fileobj=io.BufferedReader(replay, _CHUNK), mode="r|")
        while (member := self.tar.next()) is not None:
            self.tar.members.clear()  # type: ignore[attr-defined]  # every header read: not needed
            yield member


class _Replay(io.RawIOBase):
    """`pieces`, then the rest of `stream`."""

    def __init__(self, pieces: list[bytes], stream: IO[bytes]) -> None:
        self.pieces = [memoryview(p) for p in pieces if p]
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.pieces:
            piece = self.pieces[0]
            n = min(len(buffer), len(piece))
            buffer[:n] = piece[:n]
            if n == len(piece):
                self.pieces.pop(0)
            else:
                self.pieces[0] = piece[n:]
            return n
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]
