"""The session's shared key (under which a BuildKit daemon keeps its copy of the context) is secret: no other user
of the daemon can compute it from the host name and the path."""

from __future__ import annotations

import hashlib
import socket
import stat
from pathlib import Path

from workbench.remote.solve import node_id, shared_key


def test_shared_key_is_stable_per_root_and_unguessable(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    mine, theirs = tmp_path / "root-a", tmp_path / "root-b"
    key = shared_key(ctx, mine)
    assert key == shared_key(ctx, mine)  # incremental transfers: the same key build after build
    assert key != shared_key(ctx, theirs)  # another user's root, the same path: another key
    guessable = hashlib.sha256(f"{socket.gethostname()}:{ctx.resolve()}".encode()).hexdigest()[:32]
    assert key != guessable
    ident = mine / "node-id"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600 and len(ident.read_text()) == 64
    assert sorted(p.name for p in mine.iterdir()) == ["node-id"]  # no temp file left


def test_damaged_node_id_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "node-id").write_text("not an id\n")
    value = node_id(root)
    assert len(value) == 64 and (root / "node-id").read_text() == value
