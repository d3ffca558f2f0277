"""`workbench history import` of a hostile archive writes only a new record under ROOT/history."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH


@pytest.mark.parametrize("ident", ["../../../escaped", "/ABSOLUTE", "..", "", "x/y"])
def test_an_imported_record_id_never_becomes_a_path(tmp_path: Path, ident: str) -> None:
    target = tmp_path / "ABSOLUTE" if ident == "/ABSOLUTE" else None
    session = tmp_path / "sess"
    session.mkdir()
    (session / "events.jsonl").write_text('{"type": "BuildStarted", "ts": 1}\n')
    (session / "authorized_keys").write_text("ssh-ed25519 AAAA attacker\n")
    meta_id = str(target) if target else ident
    (session / "meta.json").write_text(json.dumps({"id": meta_id}))
    archive = tmp_path / "h.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(session, arcname="sess")
    root = tmp_path / "deep" / "er" / "root"
    proc = subprocess.run(WORKBENCH + ["history", "import", "--root", str(root), str(archive)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    new = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-z]{25}", new), new
    assert [p.name for p in (root / "history").iterdir()] == [new]
    assert (root / "history" / new / "authorized_keys").stat().st_mode & 0o077 == 0
    everywhere = [p for p in tmp_path.rglob("authorized_keys")]
    assert everywhere == [session / "authorized_keys", root / "history" / new / "authorized_keys"], everywhere
