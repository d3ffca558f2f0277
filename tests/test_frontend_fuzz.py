"""Property-based robustness tests for the Dockerfile parser and the shell lexer.

Realistic Dockerfiles (every instruction, flags, JSON and shell forms, continuations with ``\\`` and with the
backtick escape directive, comments and empty lines inside continuations, heredocs of every flavour, parser
directives, BOM, CRLF, unicode), BuildKit's golden corpus, and mutations of both (characters and lines inserted,
deleted, duplicated; random bytes decoded as text) are fed to :func:`parse`; shell words with every ``${v...}``
modifier, quotes, escapes and junk are fed to :class:`ShellLex`. The only exceptions allowed are the frontend's
own (``DockerfileParseError`` with a line inside the file, ``ShellExpansionError``); successful parses must keep
their line invariants and dump without error. Each example runs under a watchdog, so a hang fails the test.

22,650 examples per run in total (see ``_EXAMPLES``; ``WORKBENCH_FUZZ_SCALE`` multiplies them).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from workbench.frontend.dockerfile.parser import (
    DockerfileParseError,
    HeredocError,
    ParseResult,
    _match_directive,
    must_parse_heredoc,
    parse,
    parse_heredoc,
)
from workbench.frontend.dockerfile.shell import ShellExpansionError, ShellLex

# examples per test; the sum is the per-run total (22,650), about 35 s on one core
_EXAMPLES = {
    "generated": 1000,
    "mutated": 1000,
    "seeded": 8000,
    "corpus_mutated": 2500,
    "junk_text": 2500,
    "shell_words": 1500,
    "shell_seeded": 4000,
    "heredoc_words": 1000,
    "directive_regex": 1000,
    "long_lines": 150,
}


_SCALE = float(os.environ.get("WORKBENCH_FUZZ_SCALE", "1"))  # e.g. 20 for a long local run


def _settings(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(max_examples=max(1, int(_EXAMPLES[name] * _SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


class _Hang(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang("example ran for more than 10 s (infinite loop?)")


@contextmanager
def _watchdog(seconds: float = 10.0) -> Iterator[None]:
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- the properties ------------------------------------------------------------------------------------------------

def _check_parse(text: str) -> None:
    note(f"text={text!r}")
    n_lines = text.count("\n") + 1
    try:
        with _watchdog():
            res = parse(text)
    except DockerfileParseError as e:
        assert isinstance(e.message, str) and e.message
        assert e.line is not None and 1 <= e.line <= n_lines + 1, (e.line, n_lines, e.message)
        return
    _check_result(res, text)


def _check_result(res: ParseResult, text: str) -> None:
    lines = text.split("\n")
    n_lines = len(lines)
    assert res.children, "a successful parse has instructions"
    assert res.escape_token in ("\\", "`")
    prev_end = 0
    for node in res.children:
        assert 1 <= node.start_line <= node.end_line <= n_lines, (node.start_line, node.end_line, n_lines)
        assert node.start_line > prev_end, "instructions overlap or go backwards"
        prev_end = node.end_line
        assert not set(node.keyword) & set("\t\v\f\r ")  # may be empty: a lone "\\" line is an instruction
        assert node.source
        if node.next_node is not None:
            assert node.keyword == "onbuild"
            assert (node.next_node.start_line, node.next_node.end_line) == (node.start_line, node.end_line)
        for doc in node.heredocs:
            assert doc.name
            assert doc.content.count("\n") <= node.end_line - node.start_line
        dumped = node.dump()
        assert dumped.startswith("(") and dumped.endswith(")")
    assert res.dump().count("\n") == len(res.children)


_LEX_MODES = st.fixed_dictionaries({
    "escape_token": st.sampled_from(["\\", "`"]),
    "raw_quotes": st.booleans(),
    "raw_escapes": st.booleans(),
    "skip_unset_env": st.booleans(),
    "skip_process_quotes": st.booleans(),
})
_ENV = st.dictionaries(st.sampled_from(["v", "A", "path", "_x", "1", "EMPTY", "é"]),
                       st.sampled_from(["", "abc", "a b", "*", "/usr/local/bin", "x\\y", "${v}", "é😀", "a/b/c"]),
                       max_size=4)


def _check_lex(word: str, modes: dict[str, object], env: dict[str, str]) -> None:
    note(f"word={word!r}")
    lex = ShellLex(**modes)  # type: ignore[arg-type]
    try:
        with _watchdog():
            res = lex.process(word, env)
    except ShellExpansionError as e:
        assert str(e).startswith("failed to process ")
        return
    assert isinstance(res.result, str)
    assert all(isinstance(w, str) and w for w in res.words)
    assert res.matched <= set(env)
    assert not res.unmatched & set(env)


# -- generators ----------------------------------------------------------------------------------------------------
# One grammar, two sources of choices: hypothesis draws (shrinkable, slower) and a seeded random.Random (fast, for
# volume; hypothesis still reports the generated text of a failing example).

class _Chooser:
    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def pick(self, seq: Sequence[str]) -> str:
        raise NotImplementedError

    def binary(self, max_size: int) -> bytes:
        raise NotImplementedError

    def text(self, alphabet: str | None, max_size: int) -> str:
        raise NotImplementedError

    def one_in(self, n: int) -> bool:
        return self.integer(0, n - 1) == 0


class _Draws(_Chooser):
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def pick(self, seq: Sequence[str]) -> str:
        return self.draw(st.sampled_from(seq))

    def binary(self, max_size: int) -> bytes:
        return self.draw(st.binary(max_size=max_size))

    def text(self, alphabet: str | None, max_size: int) -> str:
        return self.draw(st.text(alphabet=alphabet, max_size=max_size) if alphabet else st.text(max_size=max_size))


class _Seeded(_Chooser):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def pick(self, seq: Sequence[str]) -> str:
        return self.rng.choice(seq)

    def binary(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))

    def text(self, alphabet: str | None, max_size: int) -> str:
        n = self.rng.randint(0, max_size)
        if alphabet:
            return "".join(self.rng.choices(alphabet, k=n))
        return "".join(chr(self.rng.choice((self.rng.randint(0x20, 0x7E), self.rng.randint(0, 0x10FFFF))))
                       for _ in range(n))


def _from_draws(gen: Callable[[_Chooser], str]) -> st.SearchStrategy[str]:
    return st.composite(lambda draw: gen(_Draws(draw)))()


def _from_seeds(gen: Callable[[_Chooser], str]) -> st.SearchStrategy[str]:
    return st.integers(0, 2**64).map(lambda seed: gen(_Seeded(seed)))


_JUNK_CHARS = (" \t\\`'\"$#{}[]<>-=:,/%?+*!@0\x00\x0b\x0c\r\x85\xa0\u2028\u3000\ufeff\ufffd\udcffé😀aZ9_")
_TOKENS = ["a", "alpine:3.20", "/dst/", "src", "$HOME", "${v}", "${v:-x}", "${v:+y}", "${v#*/}", "${v%%.*}",
           "${v/a/b}", "${v//a/b}", "${v?msg}", "${v:?}", '"quoted word"', "'single'", "a\\ b", "`x", "#notcomment",
           "&&", "echo", "hi", "é", "😀", "80/tcp", "AS", "as", "stage", "--", "-x", "x=1", "k=\"v w\"", "k='v'", "=",
           "[", "]", "<<", "<<<EOF", "<EOF"]
_KEYWORDS = ["FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
             "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "from", "Run", "copy", "FOO"]
_FLAGS = ["--from=build", "--chown=1:2", '--chown="a b"', "--chmod=755", "--link", "--mount=type=cache,target=/x",
          "--network=none", "--platform=$BUILDPLATFORM", "--interval=5s", "--", "--x", "--='q'", "--a\\", "--e=é"]
_HEREDOC_MARKERS = ["<<EOF", "<<-EOF", "<<'EOF'", '<<"EOF"', "3<<X", "<<E\"O\"F", "<<-'T T'", "<<$V", "<<EOF<<X",
                    "<<'EOF", "<<", "<<-", "<<\\", "9999999999999999999999<<EOF", "<<E\\OF", "<<-\"EOF\""]
_DIRECTIVES = ["# escape=`", "# escape=\\", "#escape = `  ", "# syntax=docker/dockerfile:1.14", "#check=skip=all",
               "# ESCAPE=`", "# escape=x", "# escape=", "# foo=bar", "# just a comment", "#", "//syntax=x"]


def _junk(c: _Chooser, max_size: int = 10) -> str:
    return c.text(_JUNK_CHARS, max_size)


def _token(c: _Chooser) -> str:
    return c.pick(_TOKENS) if c.integer(0, 2) else _junk(c)


def _json_args(c: _Chooser) -> str:
    kind = c.integer(0, 3)
    if kind == 0:
        items = [c.pick(_TOKENS) if c.integer(0, 1) else c.text(None, 6) for _ in range(c.integer(0, 4))]
        return json.dumps(items, ensure_ascii=c.one_in(2))
    if kind == 1:
        pool = ["1", "-2.5e3", "null", "true", '"s"', "[]", '{"a": 1}', '["x"]', "1e999", "NaN", '"\\u00e9"']
        return "[" + ", ".join(c.pick(pool) for _ in range(c.integer(0, 3))) + "]"
    if kind == 2:
        depth = int(c.pick(["1", "5", "300", "1500", "10001"]))
        inner = c.pick(['"x"', "", "1", "NaN", "1e999", '{"a": [1]}'])
        return "[" * depth + inner + "]" * int(c.pick([str(depth), "0", str(depth - 1)]))
    return "[" + _junk(c) + c.pick(["]", "", '"]', ",]"])


def _instruction(c: _Chooser, escape: str) -> list[str]:
    """One instruction: its (possibly continued) lines followed by heredoc bodies."""
    keyword = c.pick(_KEYWORDS)
    parts = [keyword]
    if c.one_in(4):
        parts += [c.pick(_FLAGS) for _ in range(c.integer(0, 3))]
    if keyword.upper() == "ONBUILD" or c.one_in(16):
        parts.append(c.pick(["RUN", "ONBUILD", "COPY", "FROM", "MAINTAINER", "", "ONBUILD ONBUILD"]))
    heredocs: list[str] = []
    form = c.integer(0, 4)
    if form == 0:
        parts.append(_json_args(c))
    else:
        parts += [_token(c) for _ in range(c.integer(0, 5))]
        if form == 1:
            heredocs = [c.pick(_HEREDOC_MARKERS) for _ in range(c.integer(1, 3))]
            parts[1:1] = heredocs
    if keyword.upper() == "HEALTHCHECK":
        parts.insert(1, c.pick(["CMD", "NONE", "cmd", ""]))
    # continuation lines: split between words, escape + optional blanks, comments and empty lines in between
    lines: list[str] = []
    current = parts[0]
    for part in parts[1:]:
        if c.one_in(6):
            esc = escape if c.integer(0, 5) else c.pick(["\\", "`"])
            lines.append(current + " " + esc + c.pick(["", " ", "\t", "  \t"]))
            lines += [c.pick(["", "  ", "# comment \\", "  # indented", "\t"]) for _ in range(c.integer(0, 2))]
            current = c.pick(["", "  ", "\t"]) + part
        else:
            current += c.pick([" ", "  ", "\t"]) + part
    if c.one_in(11):
        current += " " + escape  # continues into whatever follows (or the end of the file)
    lines.append(current)
    # heredoc bodies, terminated (maybe indented with tabs) or not
    for marker in heredocs:
        name = marker.split("<<")[-1].lstrip("-").strip("'\"").replace('"', "")
        for _ in range(c.integer(0, 3)):
            lines.append(c.pick(["echo hi", "\tindented", "$v ${v}", "EOF ", "#!/bin/sh", ""]) if c.integer(0, 2)
                         else _junk(c))
        if not c.one_in(7):
            lines.append(c.pick(["", "\t", "\t\t"]) + name)
    return lines


def _dockerfile(c: _Chooser) -> str:
    directives = [c.pick(_DIRECTIVES) for _ in range(c.integer(0, 3))]
    escape = "\\"
    for d in directives:
        if d.replace(" ", "").lower() == "#escape=`":
            escape = "`"
            break
        if "=" not in d or d.startswith(("# foo", "# just", "//")):
            break
    lines = list(directives)
    for _ in range(c.integer(0, 6)):
        lines += [c.pick(["", "# comment", "   ", "\t# c"]) for _ in range(c.integer(0, 2))]
        lines += _instruction(c, escape)
    newline = c.pick(["\n", "\n", "\r\n", "mixed"])
    if newline == "mixed":
        text = "".join(line + c.pick(["\n", "\r\n", "\r"]) for line in lines)
    else:
        text = newline.join(lines) + c.pick([newline, ""])
    if c.one_in(9):
        text = "\ufeff" + text
    return text


def _random_text(c: _Chooser) -> str:
    kind = c.integer(0, 4)
    if kind == 0:
        return c.binary(12).decode("utf-8", "surrogateescape")
    if kind == 1:
        return c.binary(12).decode("latin-1")
    if kind == 2:
        return c.text(None, 6)
    if kind == 3:
        return _junk(c)
    return c.pick(["\n", "\r\n", "\\\n", "`\n", "<<EOF\n", "\nEOF\n", "${", "}", '"', "'", "[", "#", "\ufeff",
                   "ONBUILD ", "--", "=", "\t", "<<-X\n\tX\n"])


def _mutate(c: _Chooser, text: str) -> str:
    """Insert/delete/duplicate characters and lines, swap lines, insert random bytes decoded as text."""
    for _ in range(c.integer(1, 6)):
        op = c.integer(0, 6)
        n = len(text)
        pos = c.integer(0, n)
        if op == 0:
            text = text[:pos] + _random_text(c) + text[pos:]
        elif op == 1:
            text = text[:pos] + text[pos + c.integer(1, 8):]
        elif op == 2:
            end = min(n, pos + c.integer(1, 16))
            text = text[:end] + text[pos:end] * c.integer(1, 3) + text[end:]
        else:
            lines = text.split("\n")
            i = c.integer(0, len(lines) - 1)
            j = c.integer(0, len(lines) - 1)
            if op == 3:
                lines.insert(j, lines[i])
            elif op == 4:
                del lines[i]
            elif op == 5:
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines.insert(i, _random_text(c).replace("\n", ""))
            text = "\n".join(lines)
    return text


_CORPUS = Path(__file__).parent / "data" / "buildkit-parser"
_CORPUS_TEXTS = sorted(p.read_bytes().decode("utf-8", "surrogateescape") for p in _CORPUS.rglob("Dockerfile"))

_NAMES = ["v", "A", "_x", "1", "12", "@", "*", "#", "?", "-", "$", "!", "0", "é", "", "{", ":", "}"]
_MODIFIERS = ["", "-", ":-", "+", ":+", "?", ":?", "#", "##", "%", "%%", "/", "//", ":#", ":%", "=", ":=", ":", "~"]


def _shell_word(c: _Chooser, depth: int = 0) -> str:
    parts: list[str] = []
    for _ in range(c.integer(0, 4)):
        kind = c.integer(0, 7)
        if kind == 0 and depth < 3:
            name = c.pick(_NAMES)
            mod = c.pick(_MODIFIERS)
            inner = _shell_word(c, depth + 1) if mod else ""
            if mod in ("/", "//"):
                inner += c.pick(["/", "", "\\/"]) + _shell_word(c, depth + 1)
            parts.append("${" + name + mod + inner + c.pick(["}", "}", "}", "", "\\}"]))
        elif kind == 1:
            parts.append("$" + c.pick(_NAMES))
        elif kind == 2 and depth < 3:
            parts.append('"' + _shell_word(c, depth + 1) + c.pick(['"', '"', ""]))
        elif kind == 3:
            parts.append("'" + _junk(c) + c.pick(["'", "'", ""]))
        elif kind == 4:
            parts.append(c.pick(["\\", "`"]) + c.pick(["", "$", '"', "'", "\\", "`", "*", "?", "}", "/", " ", "x"]))
        elif kind == 5:
            parts.append(c.pick(["*", "?", "a*b", "\\*", "\\?", "\\\\", "[", "(", ".", "|", "^", "$"]))
        elif kind == 6:
            parts.append(c.pick([" ", "\t", "\u3000", "\xa0", "\n"]))
        else:
            parts.append(_junk(c))
    return "".join(parts)


def _shell_junk(c: _Chooser) -> str:
    kind = c.integer(0, 4) if c.one_in(10) else c.integer(0, 2)
    if kind == 0:
        return _junk(c, 40)
    if kind == 1:
        return c.text(None, 30)
    if kind == 2:
        return _mutate(c, _shell_word(c))
    n = c.integer(1, 600)
    return "${v:-" * n + "x" + "}" * n if kind == 3 else '"${v:-' * n


# -- parser tests --------------------------------------------------------------------------------------------------

@_settings("generated")
@given(_from_draws(_dockerfile))
def test_parse_generated_dockerfiles(text: str) -> None:
    _check_parse(text)


@_settings("mutated")
@given(_from_draws(lambda c: _mutate(c, _dockerfile(c))))
def test_parse_mutated_dockerfiles(text: str) -> None:
    _check_parse(text)


@_settings("seeded")
@given(_from_seeds(lambda c: _mutate(c, _dockerfile(c)) if c.one_in(2) else _dockerfile(c)))
def test_parse_seeded_dockerfiles(text: str) -> None:
    _check_parse(text)


@_settings("corpus_mutated")
@given(_from_seeds(lambda c: _mutate(c, c.pick(_CORPUS_TEXTS))))
def test_parse_mutated_corpus(text: str) -> None:
    _check_parse(text)


@_settings("junk_text")
@given(st.one_of(st.text(alphabet=_JUNK_CHARS + "\nRUNCOPYFROMENVLABELONBUILD ", max_size=80),
                 st.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape")),
                 st.text(max_size=40)))
def test_parse_junk_text(text: str) -> None:
    _check_parse(text)


# -- lexer tests ---------------------------------------------------------------------------------------------------

@_settings("shell_words")
@given(_from_draws(_shell_word), _LEX_MODES, _ENV)
def test_lexer_generated_words(word: str, modes: dict[str, object], env: dict[str, str]) -> None:
    _check_lex(word, modes, env)


@_settings("shell_seeded")
@given(_from_seeds(lambda c: _shell_junk(c) if c.one_in(3) else _shell_word(c)), _LEX_MODES, _ENV)
def test_lexer_seeded_words(word: str, modes: dict[str, object], env: dict[str, str]) -> None:
    _check_lex(word, modes, env)


@_settings("heredoc_words")
@given(st.one_of(st.sampled_from(_HEREDOC_MARKERS), _from_seeds(lambda c: _mutate(c, c.pick(_HEREDOC_MARKERS))),
                 st.text(alphabet="<-0123'\"\\$ {}EOF", max_size=12)))
def test_parse_heredoc_word(word: str) -> None:
    note(f"word={word!r}")
    try:
        with _watchdog():
            doc = parse_heredoc(word)
    except (ShellExpansionError, HeredocError):
        assert must_parse_heredoc(word) is None
        return
    if doc is not None:
        assert doc.name and doc.file_descriptor >= 0
    assert must_parse_heredoc(word) == doc


# -- differential and long-line checks -----------------------------------------------------------------------------

_RE2_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")  # BuildKit's


@_settings("directive_regex")
@given(st.text(alphabet="aZ9=_ \t\r\f\n\v`\\x#\u3000", max_size=16))
def test_directive_matcher_equals_buildkit_regex(text: str) -> None:
    m = _RE2_DIRECTIVE.fullmatch(text)
    assert _match_directive(text) == ((m.group(1), m.group(2)) if m else None)


_LONG_UNITS = ["a\\", " ", "\t", "<<", "<<EOF ", "$", "${", "${v:-", "}", '"', "'", "\\ ", "[", "]", "=", "--x=",
               "# ", "`", ",", '"a",', "<<-'E' ", "\\\\", "${v##*a*a*a}"]


@_settings("long_lines")
@given(st.sampled_from(["RUN", "COPY", "ENV", "LABEL", "ARG", "HEALTHCHECK CMD", "CMD", "FROM", "ONBUILD ADD",
                        "# escape=", "#", "USER"]),
       st.lists(st.sampled_from(_LONG_UNITS), min_size=1, max_size=3), st.sampled_from([2000, 30000, 65530]))
def test_long_lines_stay_fast(keyword: str, units: list[str], size: int) -> None:
    """Lines up to BuildKit's 64 KiB limit parse (and their words lex) in well under the watchdog's time."""
    unit = "".join(units)
    line = keyword + " " + unit * (size // len(unit))
    _check_parse("FROM a\n" + line + "\n")
    _check_lex(line, {"escape_token": "\\"}, {"v": "a" * 50})
