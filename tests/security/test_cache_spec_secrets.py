"""Errors about a `--cache-to` / `--cache-from` value never repeat the tokens in it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH


@pytest.mark.parametrize("spec", ["type=gha,token=TOPSECRET1,bogus", "type=nope,ghtoken=TOPSECRET1",
                                  "type=gha,url=http://127.0.0.1:1,token=TOPSECRET1,ignore-error=maybe"])
def test_a_bad_cache_spec_error_hides_its_token(tmp_path: Path, spec: str) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(tmp_path / "root"), "--cache-to", spec,
                                       str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--cache-to" in proc.stderr and "TOPSECRET1" not in proc.stderr + proc.stdout, proc.stderr
