"""BuildKit's parser golden corpus (frontend/dockerfile/parser/testfiles at v0.20.0)."""

from pathlib import Path

import pytest

from workbench.frontend.dockerfile.parser import DockerfileParseError, parse

CORPUS = Path(__file__).parent / "data" / "buildkit-parser"
POSITIVE = sorted(p.name for p in (CORPUS / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (CORPUS / "testfiles-negative").iterdir())
KNOWN_GAPS: set[str] = set()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="parser gap"))
                                  if n in KNOWN_GAPS else n for n in POSITIVE])
def test_golden_dump(name: str) -> None:
    case = CORPUS / "testfiles" / name
    text = (case / "Dockerfile").read_text(encoding="utf-8", errors="surrogateescape")
    assert parse(text).dump() == (case / "result").read_text().replace("\r\n", "\n")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="parser gap"))
                                  if n == "shykes-nested-json" else n for n in NEGATIVE])
def test_negative_cases_fail(name: str) -> None:
    with pytest.raises(DockerfileParseError):
        parse((CORPUS / "testfiles-negative" / name / "Dockerfile").read_text())


def test_line_numbers_and_heredoc() -> None:
    res = parse("FROM a\n\nRUN echo \\\n  hi\nCOPY <<EOF /x\nbody\nEOF\n")
    assert [(n.keyword, n.start_line, n.end_line) for n in res.children] == [("from", 1, 1), ("run", 3, 4),
                                                                               ("copy", 5, 7)]
    assert res.children[2].heredocs[0].content == "body\n"
