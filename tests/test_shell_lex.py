"""Shell word lexer: BuildKit's envVarTest/wordsTest data plus lex_test.go's inline cases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from workbench.frontend.dockerfile.shell import ShellExpansionError, ShellLex, go_quote

DATA = Path(__file__).parent / "data" / "shell"
ENV_VAR_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list[tuple[str, str]]:
    cases = []
    for line in (DATA / "envVarTest").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        platform, source, expected = (p.strip() for p in line.split("|"))
        if platform in ("A", "U"):
            cases.append((source, expected))
    return cases


def _words_cases() -> list[tuple[str, dict[str, str], list[str]]]:
    cases = []
    env: dict[str, str] = {}
    for line in (DATA / "wordsTest").read_text(encoding="utf-8").split("\n"):
        if line.startswith("#") or not line:
            continue
        if line.startswith("ENV "):
            k, _, v = line[3:].lstrip(" ").partition("=")
            env[k] = v
            continue
        test, expected = line.split("|")
        cases.append((test.strip(), dict(env), expected.lstrip(" ").split(",")))
    return cases


@pytest.mark.parametrize(("source", "expected"), _env_var_cases())
def test_env_var_file(source: str, expected: str) -> None:
    lex = ShellLex("\\")
    if expected == "error":
        with pytest.raises(ShellExpansionError):
            lex.process_word(source, ENV_VAR_ENV)
    else:
        assert lex.process_word(source, ENV_VAR_ENV) == expected


@pytest.mark.parametrize(("source", "env", "expected"), _words_cases())
def test_words_file(source: str, env: dict[str, str], expected: list[str]) -> None:
    try:
        words = ShellLex("\\").process_words(source, env)
    except ShellExpansionError:
        words = ["error"]
    assert words == expected


MATCH_CASES: list[tuple[str, dict[str, str], str | None, set[str]]] = [
    ("x", {"DUMMY": "dummy"}, "x", set()),
    ("x ${UNUSED}", {"DUMMY": "dummy"}, "x ", set()),
    ("x ${FOO}", {"FOO": "y"}, "x y", {"FOO"}),
    ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc", {"FOO", "BAR"}),
    ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc", {"FOO", "BAR"}),
    ("${FOO:-}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}),
    ("${FOO:-}", {}, "", set()),
    ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb ", {"FOO", "BAR"}),
    ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  ", {"FOO", "BAR"}),
    ("${FOO?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}),
    ("${BAR?bbb}", {"FOO": "xxx", "BAR": ""}, "", {"BAR"}),
    ("${BAZ?ccc}", {"FOO": "xxx", "BAR": ""}, None, set()),
    ("${FOO:?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}),
    ("${BAR:?bbb}", {"FOO": "xxx", "BAR": ""}, None, set()),
    ("${BAZ:?ccc}", {"FOO": "xxx", "BAR": ""}, None, set()),
    ("${BAZ:?}", {"FOO": "xxx", "BAR": ""}, None, set()),
    ("${FOO=aaa}", {"FOO": "xxx", "BAR": ""}, None, set()),
    ("${FOO=:aaa}", {"FOO": "xxx", "BAR": ""}, None, set()),
    ("${FOO=}", {}, None, set()),
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x", {"FOO"}),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx", {"FOO"}),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y", {"FOO"}),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy", {"FOO", "BAR"}),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy", {"FOO"}),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y", {"FOO"}),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy.", {"FOO"}),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a", {"FOO"}),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}),
    ("${FOO%y}", {"FOO": "xxyy"}, "xxy", {"FOO"}),
    ("${FOO%%y*}", {"FOO": "xxyy"}, "xx", {"FOO"}),
    ("${FOO%y*}", {"FOO": "xxyy"}, "xxy", {"FOO"}),
    ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
     "/foo.*/*.txt - /foo..*.txt", {"FOO", "NEEDLE"}),
    ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
     "/tmp/bar.txt - /bar.txt", {"FOO", "NEEDLE"}),
    ("${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
     {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"}, "/foo/b/c.txt - /foo/c.txt",
     {"FOO", "NEEDLE", "REPLACEMENT"}),
    ("${FOO/$NEEDLE/$REPLACEMENT}", {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
     "https://google.de", {"FOO", "NEEDLE", "REPLACEMENT"}),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt", {"FOO"}),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy", {"FOO", "BAR"}),
    ("${FOO//ww}", {"FOO": "xxyy"}, None, set()),
    ("${FOO//}", {"FOO": "xxyy"}, None, set()),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy", {"FOO"}),
    ("${FOO///}", {}, "", set()),
    ("${FOO//x/-}", {"FOO": "xaxbx"}, "-a-b-", {"FOO"}),
    ("${FOO:#x}", {"FOO": "xy"}, None, set()),
    ("${FOO:%x}", {"FOO": "xy"}, None, set()),
    ("${FOO#\\x}", {"FOO": "xy"}, None, set()),
]


@pytest.mark.parametrize(("source", "env", "expected", "matched"), MATCH_CASES)
def test_process_with_matches(source: str, env: dict[str, str], expected: str | None, matched: set[str]) -> None:
    lex = ShellLex("\\")
    if expected is None:
        with pytest.raises(ShellExpansionError):
            lex.process_word_with_matches(source, env)
        return
    assert lex.process_word_with_matches(source, env) == (expected, matched)


def test_unmatched_names() -> None:
    res = ShellLex().process("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc} $QUX", {"FOO": "x", "BAR": ""})
    assert res.matched == {"FOO", "BAR"}
    assert res.unmatched == {"BAZ", "QUX"}


def test_mandatory_env_vars() -> None:
    lex = ShellLex("\\")
    set_env, empty_env, unset_env = {"VAR": "plain", "ARG": "x"}, {"VAR": "", "ARG": "x"}, {"ARG": "x"}
    assert lex.process_word("${VAR:?message here$ARG}", set_env) == "plain"
    for env in (empty_env, unset_env):
        with pytest.raises(ShellExpansionError, match="message herex"):
            lex.process_word("${VAR:?message here$ARG}", env)
    assert lex.process_word("${VAR?message here$ARG}", set_env) == "plain"
    assert lex.process_word("${VAR?message here$ARG}", empty_env) == ""
    with pytest.raises(ShellExpansionError, match="message herex"):
        lex.process_word("${VAR?message here$ARG}", unset_env)


@pytest.mark.parametrize(("source", "message"), [
    ("${X:?}", 'failed to process "${X:?}": X: is not allowed to be unset'),
    ("${X?}", 'failed to process "${X?}": X: is not allowed to be unset'),
    ("${}", 'failed to process "${}": syntax error: bad substitution'),
    ("${X", "failed to process \"${X\": unsupported modifier (\ufffd) in substitution"),
    ("${X:-a", 'failed to process "${X:-a": syntax error: missing \'}\''),
    ("${X:=a}", 'failed to process "${X:=a}": unsupported modifier (:=) in substitution'),
    ("${X:#a}", 'failed to process "${X:#a}": unsupported modifier (:#) in substitution'),
    ("'abc", "failed to process \"'abc\": unexpected end of statement while looking for matching single-quote"),
])
def test_error_messages(source: str, message: str) -> None:
    with pytest.raises(ShellExpansionError) as ei:
        ShellLex().process_word(source, {})
    assert str(ei.value) == message


def test_backtick_escape_token() -> None:
    lex = ShellLex("`")
    assert lex.process_word("a`$b c\\d", {"b": "B"}) == "a$b c\\d"
    assert lex.process_word('"x`"y"', {}) == 'x"y'
    assert lex.process_words("a` b c", {}) == ["a b", "c"]


def test_words_split_expansions_not_quotes() -> None:
    lex = ShellLex()
    env = {"SRC": "a b", "E": ""}
    assert lex.process_words("$SRC /dst", env) == ["a", "b", "/dst"]
    assert lex.process_words('"$SRC" /dst', env) == ["a b", "/dst"]
    assert lex.process_words("$E x ''", env) == ["x"]
    assert lex.process_word("  $SRC  ", env) == "  a b  "


def test_raw_and_skip_modes() -> None:
    lex = ShellLex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    assert lex.process_words("RUN <<'EOF' $X ${Y:-z} a\\ b", {}) == ["RUN", "<<'EOF'", "$X", "${Y:-z}", "a\\ b"]
    assert ShellLex(skip_process_quotes=True).process_word("'$A'", {"A": "1"}) == "'1'"


def test_go_quote() -> None:
    assert go_quote('a"b\\c\td\ne') == '"a\\"b\\\\c\\td\\ne"'
    assert go_quote("\x00\x7f\u00a0é😀") == '"\\x00\\x7f\\u00a0é😀"'
    assert go_quote("\udcff") == '"\\xff"'


# -- regressions found by tests/test_frontend_fuzz.py ---------------------------------------------------------------

@pytest.mark.parametrize("word", ["${v:-" * 2000 + "x" + "}" * 2000, '"${v:-' * 2000, '${v:-"' * 2000])
def test_deep_nesting_is_a_shell_error(word: str) -> None:
    # was RecursionError; Python's stack allows a few hundred nested expansions, deeper is a ShellExpansionError
    with pytest.raises(ShellExpansionError) as ei:
        ShellLex().process_word(word, {})
    assert str(ei.value).endswith(": expansion nested too deeply")
    assert ShellLex().process_word("${v:-" * 100 + "x" + "}" * 100, {}) == "x"


def test_undecodable_bytes_and_bom_like_text_scanner() -> None:
    # Go's text/scanner reads invalid UTF-8 as U+FFFD and skips a BOM at the start of the word (and of a pattern)
    lex = ShellLex()
    assert lex.process_word("\ufeffa\udcff\ufeff", {}) == "a\ufffd\ufeff"
    assert lex.process_words("\udcfe b", {}) == ["\ufffd", "b"]
    assert lex.process_word("${v#\ufeffa}", {"v": "ab"}) == "b"
    assert lex.process_word("\ud800", {}) == "\ufffd"


def test_many_expansions_are_linear() -> None:
    # was quadratic: the current word was grown with str += on an attribute
    word = "${v:-}" * 4000
    start = time.monotonic()
    assert ShellLex().process_words(word, {"v": "x" * 100}) == ["x" * 400000]
    assert time.monotonic() - start < 5
