"""Pathological wildcard patterns end in linear time (issue 15, item 5).

`.dockerignore` / `COPY --exclude` patterns and `${var#pattern}`-style expansions used to become Python
regexps, which backtrack: `*a*a*a*a*a*a*a*a*a*a*b` against a 40-character name took 20 s per path.
Each test has a pytest timeout instead of a timing assertion; each also checks the answers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb
from workbench.frontend.dockerfile.shell import ShellLex
from workbench.fsutil.patterns import IgnoreMatcher
from workbench.llb.ops import Copy
from workbench.solver import fileops

EVIL = "*a*a*a*a*a*a*a*a*a*a*b"


@pytest.mark.timeout(10)
def test_star_chain_against_long_names() -> None:
    m = IgnoreMatcher([EVIL])
    # names that get past the cheap checks (they end in "b", or a part of them does) yet do not match
    for name in ("a" * 40, "a" * 40 + "/b", "x" + "a" * 38 + "/zb", "a" * 4000 + "/b" + "a" * 40):
        assert not m.excluded(name), name
    assert m.excluded("a" * 20 + "b")
    assert m.excluded("a" * 10 + "b/inside")  # a parent dir matching excludes what is inside
    assert not IgnoreMatcher(["*" + "a*" * 500 + "b"]).excluded("a" * 400 + "/b")


ADVERSARIAL = {  # pattern: (path, excluded?) pairs; each has a path that took a backtracking regex minutes
    "dir-star-chain": ("**/" * 300 + "x", [("d/" * 300 + "y/x", True), ("d/" * 2000 + "y", False)]),
    "star-run": ("*" * 5000 + "b", [("a" * 4000, False), ("a" * 4000 + "/b", True)]),
    "star-a-run": ("**" + "a**" * 200 + "b", [("a" * 4000, False), ("a" * 300 + "/b", True)]),
    "class-star-chain": ("[a-z]*" * 12 + "[!a]", [("a" * 4000, False), ("a" * 4000 + "z", True)]),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_patterns(name: str) -> None:
    pattern, cases = ADVERSARIAL[name]
    m = IgnoreMatcher([pattern])
    assert [m.excluded(path) for path, _ in cases] == [expected for _, expected in cases]


@pytest.mark.timeout(10)
def test_exclusions_and_many_patterns() -> None:
    patterns = [EVIL, "!" + EVIL, "**/*.log", "!keep/**"] * 50 + ["*a*a*a*a*a*a*a*a*a*a*c"]
    m = IgnoreMatcher(patterns)
    names = ["d" * 30 + "/" + "a" * 40 + suffix for suffix in ("", "b", "c", ".log")]
    assert [m.excluded(n) for n in names] == [False, False, False, True]
    assert m.excluded("a" * 39 + "c")
    assert not m.excluded("keep/x.log")


@pytest.mark.timeout(10)
def test_copy_include_and_exclude_filters(tmp_path: Path) -> None:
    # COPY filters compare the parts of an include pattern with a directory's parts one by one
    src = tmp_path / "src"
    for name in ("a" * 40, "a" * 10 + "b"):
        (src / name).mkdir(parents=True)
        (src / name / "x").write_text(name)
        (src / name / "y").write_text(name)
    dest = tmp_path / "dest"
    dest.mkdir()
    fileops.copy(src, dest, Copy(1, ".", "/out", include_patterns=(EVIL + "/*",), exclude_patterns=(EVIL + "/y",)))
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["out", "out/aaaaaaaaaab",
                                                                        "out/aaaaaaaaaab/x"]


SUFFIX_EVIL = "b" + "*a" * 10 + "*"  # ${x%pattern} matches it backwards: EVIL again


@pytest.mark.timeout(10)
@pytest.mark.parametrize("op, pattern, hit", [("/", EVIL, "a" * 3000 + "b"), ("//", EVIL, "a" * 3000 + "b"),
                                              ("#", EVIL, "a" * 3000 + "b"), ("##", EVIL, "a" * 3000 + "b"),
                                              ("%", SUFFIX_EVIL, "b" + "a" * 3000),
                                              ("%%", SUFFIX_EVIL, "b" + "a" * 3000)],
                         ids=["replace", "replace-all", "trim-prefix", "trim-longest-prefix", "trim-suffix",
                              "trim-longest-suffix"])
def test_pathological_shell_patterns(op: str, pattern: str, hit: str) -> None:
    # ${x/pattern/z}, ${x//pattern/z}, ${x#pattern}, ... with a pattern that does not match, then one that does
    word = "${x" + op + pattern + ("/z}" if "/" in op else "}")
    lex = ShellLex()
    assert lex.process_word(word, {"x": "a" * 3000}) == "a" * 3000
    assert lex.process_word(word, {"x": hit}) == ("z" if "/" in op else "")


@pytest.mark.timeout(60)
def test_build_with_a_pathological_dockerignore(tmp_path: Path, root: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for i in range(3):
        (ctx / ("a" * 40 + str(i))).write_text("x")
    (ctx / ("a" * 20 + "b")).write_text("excluded")
    (ctx / ".dockerignore").write_text(EVIL + "\n")
    (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY --exclude={EVIL[:-1]}0 . /\n")
    out = tmp_path / "out"
    wb(str(ctx), "--output", f"type=local,dest={out}", root=root)
    assert sorted(p.name for p in out.iterdir()) == sorted(["Dockerfile", ".dockerignore", "a" * 40 + "1",
                                                            "a" * 40 + "2"])


@pytest.mark.timeout(60)
def test_expansions_have_a_budget_for_the_whole_dockerfile(tmp_path: Path) -> None:
    """Each expansion is capped, but forty of them at the cap would take minutes and gigabytes: the whole
    Dockerfile has a budget too, and going over it is an error naming the expansion."""
    lines = ["FROM scratch", "ENV A=" + "a" * 15000]
    lines += [f"ENV B{i}=${{A//a/{'b' * 1000}}}" for i in range(40)]
    (tmp_path / "Dockerfile").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(WORKBENCH + ["check", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "expansions are too large" in proc.stderr, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr
