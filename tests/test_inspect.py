"""`workbench inspect ast` (BuildKit's parser dump, byte for byte) and `workbench inspect llb` (ops as JSON lines)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH

CORPUS = Path(__file__).parent / "data" / "buildkit-parser"
POSITIVE = sorted(p.name for p in (CORPUS / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (CORPUS / "testfiles-negative").iterdir())


def inspect(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(WORKBENCH + ["inspect", *args], capture_output=True, timeout=60)


def test_corpus_has_all_cases() -> None:
    assert len(POSITIVE) == 33 and len(NEGATIVE) == 4


@pytest.mark.parametrize("name", POSITIVE)
def test_inspect_ast_matches_buildkit_result(name: str) -> None:
    proc = inspect("ast", str(CORPUS / "testfiles" / name / "Dockerfile"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (CORPUS / "testfiles" / name / "result").read_bytes()


@pytest.mark.parametrize("name", NEGATIVE)
def test_inspect_ast_rejects_negative_cases(name: str) -> None:
    proc = inspect("ast", str(CORPUS / "testfiles-negative" / name / "Dockerfile"))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "ERROR:" in err and proc.stdout == b""


def test_inspect_ast_error_shows_the_line(tmp_path: Path) -> None:
    df = tmp_path / "Dockerfile"
    df.write_text("FROM busybox\nRUN <<EOF\necho never closed\n")
    proc = inspect("ast", str(df))
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "Dockerfile:2" in err and ">>> RUN <<EOF" in err and "unterminated heredoc" in err


def test_inspect_llb_lists_ops_with_lines(registry: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM localhost:5055/busybox AS build\nRUN echo hi > /hi\n"
        "FROM localhost:5055/busybox\nCOPY a.txt /a.txt\nCOPY --from=build /hi /hi\n")
    proc = inspect("llb", str(tmp_path), "--root", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    ops = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    digests = [o["digest"] for o in ops]
    for o in ops:  # inputs come first
        assert all(digests.index(i) < digests.index(o["digest"]) for i in o["inputs"])
    run = next(o for o in ops if o["op"] == "ExecOp")
    assert run["fields"]["args"] == ["/bin/sh", "-c", "echo hi > /hi"]
    assert run["source"] == {"file": "Dockerfile", "start": 2, "end": 2, "lines": ["RUN echo hi > /hi"]}
    last = ops[-1]
    assert last["op"] == "FileOp" and last["source"]["lines"] == ["COPY --from=build /hi /hi"]
    assert any(o["op"] == "LocalSource" for o in ops)
    image = next(o for o in ops if o["op"] == "ImageSource")
    assert image["fields"]["manifest_digest"].startswith("sha256:")


def test_inspect_llb_reports_dockerfile_errors(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY --nope a /a\n")
    proc = inspect("llb", str(tmp_path), "--root", str(tmp_path / "root"))
    assert proc.returncode == 1
    assert "unknown flag: --nope" in proc.stderr.decode() and ">>> COPY --nope a /a" in proc.stderr.decode()
