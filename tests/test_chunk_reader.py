"""fsutil.chunks.ChunkReader: chunks read in order, a whole one handed over without a copy, errors in place."""

from __future__ import annotations

import pytest

from workbench.fsutil.chunks import ChunkReader


def _reader(*items: bytes | BaseException | None) -> ChunkReader:
    reader = ChunkReader(len(items))
    for item in items:
        assert reader._put(item)  # noqa: SLF001 - the producer's side, played here
    return reader


def test_whole_chunks_are_handed_over_and_parts_copied() -> None:
    first, second = b"abc" * 1000, b"defgh"
    reader = _reader(first, second, None)
    assert reader.read(1 << 20) is first
    assert reader.read(2) == b"de"
    assert reader.read(100) == b"fgh"
    assert reader.read(100) == b""
    assert reader.ended


def test_readinto_read_and_readall_mix() -> None:
    reader = _reader(b"hello ", b"world", None)
    buffer = bytearray(4)
    assert reader.readinto(buffer) == 4 and bytes(buffer) == b"hell"
    assert reader.read(0) == b""
    assert reader.read() == b"o world"


def test_an_error_reaches_the_reader_where_it_happened() -> None:
    reader = _reader(b"good", OSError("connection reset"))
    assert reader.read(10) == b"good"
    with pytest.raises(OSError, match="connection reset"):
        reader.read(10)
    assert isinstance(reader.failure, OSError)
    assert reader.read(10) == b""
