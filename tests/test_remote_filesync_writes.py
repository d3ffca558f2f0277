"""FileSync's sender writes little: small files requested together go out together, and a daemon that asks
for nothing (a rebuild) gets the listing alone, without a file read or a sender thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_remote_session import diffcopy, serve  # noqa: F401  (the fixture)
from workbench.remote.session import filesync
from workbench.remote.session.h2server import H2GrpcServer
from workbench.remote.session.services import SessionServices


def _context(tmp_path: Path, n: int) -> Path:
    root = tmp_path / "ctx"
    root.mkdir()
    for i in range(n):
        (root / f"f{i:03}.txt").write_text(f"file {i}\n" * 20)
    return root


def _data_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each write of a call's response bytes (one per send/send_many)."""
    writes: list[int] = []
    real = H2GrpcServer._send_data

    def send_data(self: H2GrpcServer, call: Any, data: bytes) -> None:
        writes.append(len(data))
        real(self, call, data)

    monkeypatch.setattr(H2GrpcServer, "_send_data", send_data)
    return writes


def test_small_files_requested_together_go_out_in_few_writes(serve, tmp_path: Path,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = _context(tmp_path, 200)
    channel = serve(SessionServices(dirs={"context": root}).handlers())
    monkeypatch.setattr(filesync, "LINGER", 0.5)  # however slowly this machine passes the REQs on
    writes = _data_writes(monkeypatch)
    stats, data = diffcopy(channel, [("dir-name", "context")])
    assert len(stats) == 200
    assert data == {f"f{i:03}.txt": f"file {i}\n".encode() * 20 for i in range(200)}
    assert len(writes) < 40, writes  # the listing in a few batches, the 200 files' data in a few more


def test_a_daemon_that_asks_for_nothing_gets_no_file_read_and_no_sender(serve, tmp_path: Path,  # noqa: F811
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = _context(tmp_path, 50)
    channel = serve(SessionServices(dirs={"context": root}).handlers())
    started: list[str] = []
    monkeypatch.setattr(filesync.DiffCopySender, "_send_files", lambda self: started.append("sender"))
    opened: list[str] = []
    real_open = filesync.open_listed
    monkeypatch.setattr(filesync, "open_listed", lambda *a: opened.append(a[1]) or real_open(*a))
    stats, data = diffcopy(channel, [("dir-name", "context")], want=lambda s: False)
    assert [s.path for s in stats] == [f"f{i:03}.txt" for i in range(50)] and data == {}
    assert started == [] and opened == []
