"""Dockerfile parser: BuildKit's golden corpus (parser/testfiles at v0.20.0) and focused cases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from workbench.frontend.dockerfile.parser import (
    DockerfileParseError,
    Heredoc,
    HeredocError,
    must_parse_heredoc,
    parse,
    parse_heredoc,
)

CORPUS = Path(__file__).parent / "data" / "buildkit-parser"
POSITIVE = sorted(p.name for p in (CORPUS / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (CORPUS / "testfiles-negative").iterdir())


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("name", POSITIVE)
def test_golden_dump(name: str) -> None:
    case = CORPUS / "testfiles" / name
    assert parse(_read(case / "Dockerfile")).dump() == _read(case / "result").replace("\r\n", "\n")


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_cases_fail(name: str) -> None:
    with pytest.raises(DockerfileParseError) as ei:
        parse(_read(CORPUS / "testfiles-negative" / name / "Dockerfile"))
    assert ei.value.line is not None and ei.value.line >= 1


def test_corpus_line_numbers() -> None:
    # parser_test.go TestParseIncludesLineNumbers
    res = parse(_read(CORPUS / "testfile-line" / "Dockerfile"))
    assert [(c.start_line, c.end_line) for c in res.children] == [(5, 5), (11, 12), (17, 31)]
    assert res.directives == {"escape": "\\"}


def test_line_numbers_and_original() -> None:
    res = parse("FROM a\n\nRUN echo \\\n  # comment\n  hi\nCOPY <<EOF /x\nbody\nEOF\n")
    assert [(n.keyword, n.start_line, n.end_line) for n in res.children] == [("from", 1, 1), ("run", 3, 5),
                                                                               ("copy", 6, 8)]
    run = res.children[1]
    assert run.original == "RUN echo   hi"
    assert run.args == ["echo   hi"]
    assert run.source == "RUN echo \\\n  # comment\n  hi\n"
    assert res.children[2].heredocs == [Heredoc("EOF", "body\n", True, False)]
    assert res.children[2].original == "COPY <<EOF /x"


def test_empty_continuation_warning() -> None:
    # parser_test.go TestParseWarnsOnEmptyContinutationLine
    res = parse("\nFROM alpine:3.6\n\nRUN valid \\\n    continuation\n\nRUN something \\\n\n    following \\\n\n"
                "    more\n\nRUN another \\\n\n    thing\n\nRUN non-indented \\\n# this is a comment\n"
                "   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n\t")
    assert len(res.warnings) == 2
    assert res.warnings[0] == "Empty continuation line found in: RUN something     following     more"
    assert "RUN another     thing" in res.warnings[1]
    assert res.children[-1].args == ["indented     comment"]


HEREDOC_FILE = """
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN "<<NOHEREDOC"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-EXPAND
\texpand $NAME
EXPAND

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<EOF /quotes
"foo"
'bar'
EOF

COPY <<X <<Y /dest
Y
X
X
Y

RUN <<COMPLEX python3
print('hello world')
COMPLEX

COPY <<file.txt /dest
hello world
file.txt

RUN <<eo'f'
echo foo
eof

RUN <<eo\\'f
echo foo
eo'f

RUN <<'e'o\\'f
echo foo
eo'f

RUN <<'one two'
echo bar
one two

RUN <<$EOF
$EOF
\t"""


def test_heredocs() -> None:
    # parser_heredoc_test.go TestParseExtractsHeredoc (1.14 grammar: no "<< EOF" with a space);
    # unlike BuildKit's AST, <<- bodies here are already chomped.
    h = Heredoc
    expected: list[list[Heredoc]] = [
        [], [], [], [],
        [h("EMPTY", "", True, False)],
        [h("EMPTY2", "", True, False, 3)],
        [],
        [h("INDENT", "\tfoo\n\tbar\n", True, False)],
        [h("UNINDENT", "baz\nquux\n", True, True)],
        [h("UNINDENT2", "baz\nquux\n", True, True)],
        [h("EXPAND", "expand $NAME\n", True, True)],
        [h("NOEXPAND", "don't expand $NAME\n", False, True)],
        [h("COPY", "echo hello world\necho foo bar\n", True, False)],
        [h("COMMENT", "# internal comment\necho hello world\necho foo bar # trailing comment\n", True, False)],
        [h("MOUNT", "echo hello\n", True, False)],
        [h("FILE1", "content 1\n", True, False), h("FILE2", "content 2\n", True, False)],
        [h("EOF", "\"foo\"\n'bar'\n", True, False)],
        [h("X", "Y\n", True, False), h("Y", "X\n", True, False)],
        [h("COMPLEX", "print('hello world')\n", True, False)],
        [h("file.txt", "hello world\n", True, False)],
        [h("eof", "echo foo\n", False, False)],
        [h("eo'f", "echo foo\n", True, False)],
        [h("eo'f", "echo foo\n", False, False)],
        [h("one two", "echo bar\n", False, False)],
        [h("$EOF", "", True, False)],
    ]
    res = parse(HEREDOC_FILE)
    assert [c.heredocs for c in res.children[1:]] == expected
    mount = res.children[15]
    assert mount.flags == ["--mount=type=cache,target=/foo"] and mount.args == ["<<MOUNT"]
    assert res.children[16].args == ["<<FILE1", "<<FILE2", "/dest"]
    assert (mount.start_line, mount.end_line) == (53, 55)
    # heredoc bodies are not part of the dump
    assert res.children[16].dump() == '(copy "<<FILE1" "<<FILE2" "/dest")'


def test_heredoc_not_in_json_form_or_other_instructions() -> None:
    res = parse('FROM a\nRUN ["<<EOF"]\nRUN ["<<\'EOF\'"]\nUSER <<X\n')
    assert all(not c.heredocs for c in res.children)
    assert res.children[3].args == ["<<X"]


def test_heredoc_onbuild_and_errors() -> None:
    res = parse("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN x\n")
    onbuild = res.children[1]
    assert onbuild.heredocs == [Heredoc("EOF", "echo hi\n", True, False)]
    assert onbuild.next_node is not None and onbuild.next_node.keyword == "run"
    assert (onbuild.start_line, onbuild.end_line) == (2, 4)
    assert res.dump() == '(from "a")\n(onbuild (run "<<EOF"))\n(run "x")\n'
    with pytest.raises(DockerfileParseError, match="unterminated heredoc") as ei:
        parse("FROM a\n\nRUN <<EOF\necho\n")
    assert ei.value.line == 3


def test_parse_heredoc_words() -> None:
    # parser_heredoc_test.go TestParseHeredocHelpers (1.14: no whitespace after <<)
    for src in ("<<EOF", "<<'EOF'", '<<"EOF"', "<<-EOF", "<<-'EOF'", '<<-"EOF"', '<<EO"F"'):
        doc = parse_heredoc(src)
        assert doc is not None and doc.name == "EOF"
    for src in ("", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"):
        assert parse_heredoc(src) is None
    for src in ("<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'):
        with pytest.raises(Exception):  # noqa: B017 - lexer error (unterminated quote)
            parse_heredoc(src)


def test_escape_directive_backtick() -> None:
    res = parse("# escape=`\nFROM a\nRUN echo \\\nRUN b `\n  c\nCOPY x`\n  y /z\n")
    assert res.escape_token == "`"
    assert res.directives == {"escape": "`"}
    assert [c.dump() for c in res.children] == ['(from "a")', '(run "echo \\\\")', '(run "b   c")',
                                                '(copy "x" "y" "/z")']


def test_directives() -> None:
    res = parse("# syntax=docker/dockerfile:1.14\n#CHECK = skip=all;error=true  \n# escape=\\\nFROM a\n")
    assert res.directives == {"syntax": "docker/dockerfile:1.14", "check": "skip=all;error=true", "escape": "\\"}
    # a comment, blank line or unknown directive ends directive parsing
    assert parse("# hello\n# escape=`\nFROM a\n").escape_token == "\\"
    assert parse("\n# escape=`\nFROM a\n").escape_token == "\\"
    assert parse("# foo=bar\n# escape=`\nFROM a\n").escape_token == "\\"
    assert parse("  # escape=`\nFROM a\n").escape_token == "`"
    assert parse("\ufeff# escape=`\nFROM a\n").escape_token == "`"


@pytest.mark.parametrize(("text", "message", "line"), [
    ("# escape=x\nFROM a\n", "invalid escape token 'x' does not match ` or \\", 1),
    ("# syntax=a\n# syntax=b\nFROM a\n", "only one syntax parser directive can be used", 2),
    ("FROM a\n\nENV A\n", "ENV must have two arguments", 3),
    ("FROM a\nLABEL a=b c\n", 'Syntax error - can\'t find = in "c". Must be of the form: name=value', 2),
    ("FROM a\nRUN x \\\n  y\nCMD [1]\n", "when using JSON array syntax, arrays must be comprised of strings only", 4),
    ("", "file with no instructions", 1),
    ("FROM a\nENV\n", "ENV requires at least one argument", 2),
    ("FROM a\nLABEL  \n", "LABEL requires at least one argument", 2),
    ("FROM a\nONBUILD\n", "ONBUILD requires at least one argument", 2),
    ("FROM a\nONBUILD FROM b\n", "FROM isn't allowed as an ONBUILD trigger", 2),
    ("FROM a\nONBUILD onbuild RUN x\n", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", 2),
    ("# only\n\n# comments\n", "file with no instructions", 3),
    ("FROM a\nLABEL x=" + "a" * 65536 + "\n", "dockerfile line greater than max allowed size of 65535", 2),
])
def test_errors_carry_line(text: str, message: str, line: int) -> None:
    with pytest.raises(DockerfileParseError) as ei:
        parse(text)
    assert ei.value.message == message
    assert ei.value.line == line


def test_env_label_arg_forms() -> None:
    res = parse('FROM a\nENV A=1 B="two words" C=\nENV D  some value \nLABEL "k k"=v\nARG X=1 Y\n')
    assert res.children[1].args == ["A", "1", "=", "B", '"two words"', "=", "C", "", "="]
    assert res.children[2].args == ["D", "some value", ""]
    assert res.children[3].args == ['"k k"', "v", "="]
    assert res.children[4].args == ["X=1", "Y"]
    assert res.children[1].dump() == '(env "A" "1" "=" "B" "\\"two words\\"" "=" "C" "" "=")'


def test_forms_flags_and_unknown() -> None:
    res = parse('FROM --platform=$P a AS b\nCMD ["a", "b"]\nCMD [\'a\']\nCOPY --chown="1 2" --from=x -- a b\n'
                'HEALTHCHECK --interval=5s CMD ["true"]\nHEALTHCHECK NONE\nFOO bar baz\nexpose 80  443\n')
    frm, cmd_json, cmd_bad, copy, hc, hc_none, unknown, expose = res.children
    assert frm.flags == ["--platform=$P"] and frm.args == ["a", "AS", "b"]
    assert cmd_json.json_form and cmd_json.args == ["a", "b"]
    assert not cmd_bad.json_form and cmd_bad.args == ["['a']"]
    assert copy.flags == ["--chown=1 2", "--from=x"] and copy.args == ["a", "b"]
    assert hc.flags == ["--interval=5s"] and hc.args == ["CMD", "true"] and hc.json_form
    assert hc_none.args == ["NONE"]
    assert unknown.keyword == "foo" and unknown.dump() == '(foo "")'
    assert expose.args == ["80", "443"]


def test_crlf_and_leading_whitespace() -> None:
    res = parse("FROM a\r\n   RUN echo \\\r\n  hi\r\n\tCMD x\r\n")
    assert [c.dump() for c in res.children] == ['(from "a")', '(run "echo   hi")', '(cmd "x")']


# -- regressions found by tests/test_frontend_fuzz.py ---------------------------------------------------------------

def test_long_onbuild_chain_is_an_error_not_a_recursion_error() -> None:
    # was RecursionError: ONBUILD triggers were parsed recursively, one Python frame per ONBUILD
    with pytest.raises(DockerfileParseError) as ei:
        parse("FROM a\n" + "ONBUILD " * 3000 + "RUN x\n")
    assert ei.value.message == "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    assert ei.value.line == 2
    # the innermost trigger's own error comes first, as in BuildKit's recursive parser
    with pytest.raises(DockerfileParseError, match="comprised of strings only"):
        parse("FROM a\nONBUILD ONBUILD RUN [1]\n")
    node = parse("FROM a\nONBUILD --x=1 COPY --from=b /a /b\n").children[1]
    assert node.flags == ["--x=1"] and node.next_node is not None and node.next_node.flags == ["--from=b"]
    assert node.dump() == '(onbuild ["--x=1"] (copy ["--from=b"] "/a" "/b"))'


def test_deeply_nested_json() -> None:
    # was RecursionError from json.loads; Go's encoding/json nests up to 10000 levels, then it is not JSON
    err = "when using JSON array syntax, arrays must be comprised of strings only"
    with pytest.raises(DockerfileParseError, match=err):
        parse("FROM a\nCMD " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DockerfileParseError, match=err):
        parse('FROM a\nCMD ["a", ' + "[" * 3000 + '{"k": [1, true, null, "\\u00e9"]}' + "]" * 3000 + "]\n")
    too_deep = parse("FROM a\nCMD " + "[" * 10001 + "]" * 10001 + "\n").children[1]
    assert not too_deep.json_form and too_deep.args == ["[" * 10001 + "]" * 10001]
    unbalanced = parse("FROM a\nCMD " + "[" * 3000 + "]" * 2999 + "\n").children[1]
    assert not unbalanced.json_form
    assert parse("FROM a\nCOPY " + "[" * 2000 + "\n").children[1].args == ["[" * 2000]


def test_json_numbers_out_of_float64_range_are_not_json() -> None:
    # Go decodes numbers into float64: 1e999 fails to decode, so the line is shell form (no "strings only" error)
    node = parse('FROM a\nCMD ["a", 1e999]\n').children[1]
    assert not node.json_form and node.args == ['["a", 1e999]']
    with pytest.raises(DockerfileParseError, match="comprised of strings only"):
        parse('FROM a\nCMD ["a", 1e-999]\n')  # underflow is no error in Go


def test_heredoc_file_descriptor_overflow() -> None:
    # was ValueError from int() (Python's 4300-digit limit); Go's ParseUint saturates and the error is ignored
    res = parse("FROM a\nRUN " + "9" * 5000 + "<<EOF\nbody\nEOF\n")
    assert res.children[1].heredocs == [Heredoc("EOF", "body\n", True, False, 2**64 - 1)]
    doc = parse_heredoc("00000000000000000000000000003<<X")
    assert doc is not None and doc.file_descriptor == 3


def test_lone_surrogates_in_text() -> None:
    # was UnicodeEncodeError: only \udc80-\udcff (undecodable bytes) survive "surrogateescape" encoding
    res = parse("FROM a\ud800\nHEALTHCHECK \udfff CMD x\nCOPY --x=\udbff /a /b\n")
    assert res.dump() == '(from "a\ufffd")\n(healthcheck "\ufffd" "CMD x")\n(copy ["--x=ï¿½"] "/a" "/b")\n'


def test_lone_escape_line_is_an_instruction() -> None:
    # BuildKit: a line holding only the escape token continues into nothing and yields an empty instruction
    res = parse("\\")
    assert [(c.keyword, c.args, c.start_line, c.end_line) for c in res.children] == [("", [""], 1, 1)]
    assert res.dump() == '("")\n'


def test_undecodable_bytes_in_parsed_words() -> None:
    # parseWords (ARG, ENV, LABEL) decodes rune by rune: undecodable bytes become U+FFFD; the legacy form keeps them
    res = parse("FROM a\nARG x=\udcff y\nENV a=\udcfe\nLABEL k v\udcff\n")
    assert res.dump() == '(from "a")\n(arg "x=\ufffd" "y")\n(env "a" "\ufffd" "=")\n(label "k" "v\\xff" "")\n'


def test_directive_with_long_blank_run_is_linear() -> None:
    # was quadratic (about 30 s at 64 KiB): Python's backtracking on BuildKit's `(.+?)\s*$` directive regex
    start = time.monotonic()
    res = parse("# syntax=x" + " " * 65000 + "y\nFROM a\n")
    assert res.directives["syntax"] == "x" + " " * 65000 + "y"
    assert time.monotonic() - start < 5
    # the lazy group still takes one character when only blanks follow "="
    with pytest.raises(DockerfileParseError) as ei:
        parse("# escape=  \t \nFROM a\n")
    assert ei.value.message == "invalid escape token ' ' does not match ` or \\"


def test_parse_heredoc_raises_frontend_errors_only() -> None:
    # was a bare ValueError; BuildKit's ParseHeredoc returns this error and MustParseHeredoc drops it
    word = "<<''\nx"
    with pytest.raises(HeredocError) as ei:
        parse_heredoc(word)
    assert ei.value.message == "internal lexing of heredoc produced inconsistent results: ''\nx"
    assert isinstance(ei.value, (DockerfileParseError, ValueError))
    assert must_parse_heredoc(word) is None
    assert must_parse_heredoc("<<'EOF") is None  # lexer error
    assert must_parse_heredoc("<<EOF") == Heredoc("EOF", "", True, False)
