from workbench.fsutil.patterns import IgnoreMatcher


def test_last_match_wins_and_reinclude() -> None:
    m = IgnoreMatcher(["*.log", "**/*.log", "!sub/important.log", "tmp"])
    assert m.excluded("drop.log")
    assert m.excluded("sub/a.log")
    assert not m.excluded("sub/important.log")
    assert m.excluded("tmp")
    assert m.excluded("tmp/x")  # a parent dir matching excludes what is inside
    assert not m.excluded("keep.txt")
    assert not m.excluded(".dockerignore")


def test_comments_blank_and_leading_slash() -> None:
    m = IgnoreMatcher(["# comment", "", "/build", "docs/*.md"])
    assert m.excluded("build/out.o")
    assert m.excluded("docs/a.md")
    assert not m.excluded("docs/sub/a.md")
    assert not IgnoreMatcher([])
