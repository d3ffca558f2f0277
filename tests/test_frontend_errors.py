"""Exact error messages and lines of the Dockerfile parser and the shell lexer, as BuildKit v0.20.0 words them.

Sources: ``frontend/dockerfile/parser/parser.go`` (``unterminated heredoc``, ``file with no instructions``,
``dockerfile line greater than max allowed size of %d``, the escape token check), ``parser/directives.go``
(``only one %s parser directive can be used``), ``parser/line_parsers.go`` (JSON and ENV/LABEL forms) and
``shell/lex.go`` (every substitution error, wrapped as ``failed to process %q: ...`` by ``errors.Wrapf``).
Lines are 1-based: the instruction's first line, or the directive's own line.
"""

from __future__ import annotations

import pytest

from workbench.frontend.dockerfile.parser import DockerfileParseError, parse
from workbench.frontend.dockerfile.shell import ShellExpansionError, ShellLex


def _parse_error(text: str) -> DockerfileParseError:
    with pytest.raises(DockerfileParseError) as ei:
        parse(text)
    return ei.value


# -- parser ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "line"), [
    ("FROM a\nRUN <<EOF\necho hi\n", 2),
    ("FROM a\n\nRUN <<EOF\n", 3),
    ("FROM a\nCOPY <<A <<B /x\na\nA\nb\n", 2),  # the second heredoc never ends
    ("FROM a\nRUN <<-EOF\n\techo\n  EOF\n", 2),  # <<- strips tabs only
    ("FROM a\nRUN echo \\\n  <<EOF\nbody\n", 2),  # heredoc opened on a continuation line
    ("FROM a\nONBUILD RUN <<EOF\nx\n", 2),
    ("FROM a\r\nRUN <<EOF\r\nx\r\nEOF \r\n", 2),  # the terminator must match exactly
])
def test_unterminated_heredoc(text: str, line: int) -> None:
    err = _parse_error(text)
    assert err.message == "unterminated heredoc"
    assert err.line == line
    assert str(err) == f"unterminated heredoc (line {line})"


@pytest.mark.parametrize(("text", "token", "line"), [
    ("# escape=%\nFROM a\n", "%", 1),
    ("# syntax=x\n# escape=``\nFROM a\n", "``", 2),
    ("#escape = ' ' \nFROM a\n", "' '", 1),
    ("# escape=\\\\\nFROM a\n", "\\\\", 1),
])
def test_bad_escape_directive(text: str, token: str, line: int) -> None:
    err = _parse_error(text)
    assert err.message == f"invalid escape token '{token}' does not match ` or \\"
    assert err.line == line


@pytest.mark.parametrize(("text", "key", "line"), [
    ("# escape=`\n# escape=`\nFROM a\n", "escape", 2),
    ("# escape=\\\n#ESCAPE=`\nFROM a\n", "escape", 2),
    ("# syntax=a\n# check=skip=all\n# syntax=b\nFROM a\n", "syntax", 3),
    ("#check=error=true\n#  Check = skip=all\nFROM a\n", "check", 2),
])
def test_duplicate_directive(text: str, key: str, line: int) -> None:
    err = _parse_error(text)
    assert err.message == f"only one {key} parser directive can be used"
    assert err.line == line


def test_directive_after_instruction_is_a_comment() -> None:
    # directives end at the first non-directive line: no duplicate error, and the escape token stays "\"
    res = parse("# escape=`\nFROM a\n# escape=`\n# escape=%\nRUN x\n")
    assert res.escape_token == "`" and [c.keyword for c in res.children] == ["from", "run"]


@pytest.mark.parametrize(("text", "line"), [
    ("", 1),
    ("\n", 1),
    ("\n\n\n", 3),
    ("# syntax=docker/dockerfile:1\n# a comment\n", 2),
    ("\ufeff", 1),
    ("   \t\n  # comment\n\r\n", 3),
])
def test_file_with_no_instructions(text: str, line: int) -> None:
    err = _parse_error(text)
    assert err.message == "file with no instructions"
    assert err.line == line


def test_line_too_long() -> None:
    err = _parse_error("FROM a\nRUN " + "x" * 70000 + "\n")
    assert err.message == "dockerfile line greater than max allowed size of 65535"
    assert err.line == 2


@pytest.mark.parametrize(("text", "message", "line"), [
    ("FROM a\nCMD [\"a\", 1]\n", "when using JSON array syntax, arrays must be comprised of strings only", 2),
    ("FROM a\nRUN \\\n [[\"x\"]]\n", "when using JSON array syntax, arrays must be comprised of strings only", 2),
    ("FROM a\nENV X\n", "ENV must have two arguments", 2),
    ("FROM a\nLABEL k\n", "LABEL must have two arguments", 2),
    ("FROM a\nENV a=b c\n", "Syntax error - can't find = in \"c\". Must be of the form: name=value", 2),
])
def test_line_parser_errors(text: str, message: str, line: int) -> None:
    err = _parse_error(text)
    assert err.message == message
    assert err.line == line


def test_heredoc_in_json_form_is_not_a_heredoc() -> None:
    # BuildKit's canContainHeredoc: JSON form never reads a body, so the "body" lines are instructions of
    # their own (which fail later as unknown instructions, not in the parser)
    res = parse('FROM a\nRUN ["cat", "<<EOF"]\nhello world\nEOF\nCOPY ["<<EOF", "/x"]\n')
    run = res.children[1]
    assert run.json_form and run.args == ["cat", "<<EOF"] and run.heredocs == []
    assert [c.keyword for c in res.children] == ["from", "run", "hello", "eof", "copy"]
    assert res.children[4].json_form and res.children[4].heredocs == []
    # and so an "unterminated" heredoc in JSON form is no error at all
    assert parse('FROM a\nRUN ["<<EOF"]\n').children[1].args == ["<<EOF"]


def test_unknown_flags_are_kept_verbatim() -> None:
    # the parser does not know flags (BuildKit rejects them later with "unknown flag: <name>"); it keeps them
    node = parse("FROM a\nCOPY --nosuch=1 --chown='a b' -- --notflag /x\n").children[1]
    assert node.flags == ["--nosuch=1", "--chown=a b"]
    assert node.args == ["--notflag", "/x"]
    assert node.dump() == '(copy ["--nosuch=1" "--chown=a b"] "--notflag" "/x")'


# -- shell lexer --------------------------------------------------------------------------------------------------

def _lex_error(word: str, env: dict[str, str] | None = None, escape: str = "\\") -> str:
    with pytest.raises(ShellExpansionError) as ei:
        ShellLex(escape).process_word(word, env or {})
    return str(ei.value)


@pytest.mark.parametrize(("word", "message"), [
    ("${}", "syntax error: bad substitution"),
    ("${:-x}", "syntax error: bad substitution"),
    ("${:}", "syntax error: bad substitution"),
    ("${{v}}", "syntax error: bad substitution"),
    ("a ${}", "syntax error: bad substitution"),
    ("${", "syntax error: missing '}'"),
    ("${v:-x", "syntax error: missing '}'"),
    ("${v:", "syntax error: missing '}'"),
    ("${v#x", "syntax error: missing '}'"),
    ("${v:-${w}", "syntax error: missing '}'"),
    ("${v/x", "syntax error: missing '/' in ${}"),
    ("${v/x/y", "syntax error: missing '}'"),
    ("${v", "unsupported modifier (\ufffd) in substitution"),
    ("${v:#x}", "unsupported modifier (:#) in substitution"),
    ("${v:%x}", "unsupported modifier (:%) in substitution"),
    ("${v:=x}", "unsupported modifier (:=) in substitution"),
    ("${v=x}", "unsupported modifier (=) in substitution"),
    ("${v~}", "unsupported modifier (~) in substitution"),
    ("${v?}", "v: is not allowed to be unset"),
    ("${v:?}", "v: is not allowed to be unset"),
    ("${v?msg}", "v: msg"),
    ("${v:?msg}", "v: msg"),
    ("${v:?the $w value}", "v: the  value"),
    ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ('"abc', "unexpected end of statement while looking for matching double-quote"),
    ('"abc\\', "unexpected end of statement while looking for matching double-quote"),
])
def test_substitution_errors(word: str, message: str) -> None:
    assert _lex_error(word) == f"failed to process {_go_quote(word)}: {message}"


def _go_quote(s: str) -> str:
    """strconv.Quote for the printable words used here."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_double_quote_error_quotes_the_word_like_go() -> None:
    assert _lex_error('"abc\\') == 'failed to process "\\"abc\\\\": ' \
        "unexpected end of statement while looking for matching double-quote"


def test_required_variable_set_but_empty() -> None:
    assert _lex_error("${v:?}", {"v": ""}) == 'failed to process "${v:?}": v: is not allowed to be empty'
    assert _lex_error("${v:?msg}", {"v": ""}) == 'failed to process "${v:?msg}": v: msg'
    assert ShellLex().process_word("${v?}", {"v": ""}) == ""


def test_escape_at_end_of_input() -> None:
    # a trailing escape token is dropped, no error (lex.go: "escapes, except end of line")
    assert ShellLex("\\").process_word("abc\\", {}) == "abc"
    assert ShellLex("`").process_word("abc`", {}) == "abc"
    assert ShellLex("`").process_word("abc\\", {}) == "abc\\"
    # inside double quotes it is dropped too, and the quote is then unterminated
    assert _lex_error('"a`', escape="`") == 'failed to process "\\"a`": ' \
        "unexpected end of statement while looking for matching double-quote"
    # a pattern may not end with its own escape (only reachable with the backtick escape token)
    assert _lex_error("${v#a\\}", {"v": "x"}, escape="`") == \
        "failed to process \"${v#a\\\\}\": invalid pattern (a\\) in substitution: invalid escape '\\\ufffd'"
    # with "\" the escaped "}" does not close the substitution
    assert _lex_error("${v#a\\}", {"v": "x"}) == "failed to process \"${v#a\\\\}\": syntax error: missing '}'"


@pytest.mark.parametrize(("word", "message"), [
    ("${v#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
    ("${v%%\\[}", "invalid pattern (\\[) in substitution: invalid escape '\\['"),
    ("${v/\\a/b}", "invalid pattern (\\a) in substitution: invalid escape '\\a'"),
])
def test_invalid_patterns(word: str, message: str) -> None:
    assert _lex_error(word, {"v": "value"}) == f"failed to process {_go_quote(word)}: {message}"


def test_pattern_checked_even_when_unset() -> None:
    # lex.go compiles the pattern whether or not the variable is set; only SkipUnsetEnv returns first
    assert _lex_error("${v#\\x}") == "failed to process \"${v#\\\\x}\": " \
        "invalid pattern (\\x) in substitution: invalid escape '\\x'"
    assert ShellLex(skip_unset_env=True).process_word("${v#\\x}", {}) == "${v#\\x}"


@pytest.mark.parametrize(("raw", "line"), [
    (b"FROM scratch\nRUN echo caf\xe9\n", 2),
    (b"FROM scratch\nWORKDIR /w\nRUN echo \\\n  \xff\xfe\n", 3),
])
def test_bytes_that_are_not_utf8_in_a_step_are_refused_at_its_line(raw: bytes, line: int) -> None:
    """BuildKit refuses to marshal an LLB string that is not UTF-8; we say so at the step, before anything runs
    (it used to fail in the middle of the build with a UnicodeEncodeError)."""
    from workbench.frontend.dockerfile.convert import ConvertOptions, DockerfileError, convert

    text = raw.decode("utf-8", "surrogateescape")  # as read_dockerfile reads it
    with pytest.raises(DockerfileError) as e:
        convert(text, ConvertOptions(), lambda ref, platform: ("", "", {}))
    assert e.value.start_line == line
    assert "string field contains invalid UTF-8" in e.value.message


def test_bytes_that_are_not_utf8_in_a_comment_or_a_heredoc_are_fine() -> None:
    from workbench.frontend.dockerfile.convert import ConvertOptions, convert

    text = b"# caf\xe9\nFROM scratch\nCOPY <<EOF /x\ncaf\xe9\nEOF\n".decode("utf-8", "surrogateescape")
    convert(text, ConvertOptions(), lambda ref, platform: ("", "", {}))
