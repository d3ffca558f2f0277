"""Dockerfile word processing with BuildKit's ``shell/lex.go`` semantics (Dockerfile 1.14).

Quotes, escapes (``\\`` or the backtick escape token), ``$VAR`` / ``${VAR}`` and the
modifiers ``- + ?`` (optionally with ``:``), ``# ## % %%`` and ``/ //``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from workbench.fsutil.patterns import LIT, ONE, STAR, Glob, Token, merge_stars
from workbench.progress.text import shorten

__all__ = ["GO_SPACES", "ProcessWordResult", "ShellExpansionError", "ShellLex", "go_quote", "is_go_space"]

# Characters for which Go's unicode.IsSpace is true.
GO_SPACES = ("\t\n\v\f\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
             + "\u2028\u2029\u202f\u205f\u3000")
_GO_SPACE_SET = frozenset(GO_SPACES)
_GO_SPACE_RUN = re.compile("[" + re.escape(GO_SPACES) + "]+")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
MAX_EXPANSION = 16 << 20
MAX_TOTAL_EXPANSION = 128 << 20
"""Most characters that variables (and `${x//a/b}` replacements) may add to one word."""
_SURROGATES = re.compile("[\ud800-\udfff]")


def is_go_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace`` for one character."""
    return ch in _GO_SPACE_SET


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``; lone surrogates from ``surrogateescape`` decoding print as ``\\xNN``."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == " " or (ch.isprintable() and not 0xD800 <= o <= 0xDFFF):
            out.append(ch)
        elif ch in _GO_CTRL:
            out.append(_GO_CTRL[ch])
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


_GO_CTRL = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


class ShellExpansionError(Exception):
    """A word could not be processed (bad substitution, unterminated quote, ``${X:?msg}``...)."""


class _Error(Exception):
    """Internal error, wrapped as ``failed to process "<word>": <msg>`` at the top."""


@dataclass
class ProcessWordResult:
    """Everything one pass over a word yields (BuildKit's ``ProcessWordResult``)."""

    result: str
    words: list[str]
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


class _Words:
    """Word splitting of the processed text (``wordsStruct``); the current word is kept as pieces."""

    __slots__ = ("buf", "size", "words", "in_word")

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.size = 0
        self.words: list[str] = []
        self.in_word = False

    def _flush(self) -> None:
        self.words.append("".join(self.buf))
        self.buf = []
        self.size = 0
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _GO_SPACE_SET:
            if self.in_word and self.size:
                self._flush()
        else:
            self.add_raw(ch)

    def add_raw(self, s: str) -> None:
        self.buf.append(s)
        self.size += len(s)
        self.in_word = True

    def add_string(self, s: str) -> None:
        """`add_char` for each character of `s` (a variable's value: it can be megabytes long)."""
        pos = 0
        for m in _GO_SPACE_RUN.finditer(s):
            if m.start() > pos:
                self.add_raw(s[pos:m.start()])
            if self.in_word and self.size:
                self._flush()
            pos = m.end()
        if pos < len(s):
            self.add_raw(s[pos:])

    def get(self) -> list[str]:
        if self.size:
            self._flush()
        return self.words


class _Word:
    """State of one ``process`` call over a source word (``shellWord``)."""

    def __init__(self, lex: ShellLex, src: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        # Go's text/scanner reads undecodable bytes (surrogate escapes here) as U+FFFD and skips a leading BOM
        self.src = _SURROGATES.sub("\ufffd", src)
        self.pos = 1 if src.startswith("\ufeff") else 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.expanded = 0
        """Characters substituted so far (values of variables)."""

    # -- scanner ------------------------------------------------------------------------------
    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else ""

    def next(self) -> str:
        if self.pos < len(self.src):
            self.pos += 1
            return self.src[self.pos - 1]
        return ""

    # -- processing ---------------------------------------------------------------------------
    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            value = self.env[name]
            self.expanded += len(value)
            if self.expanded > MAX_EXPANSION:  # `ARG b=$a$a$a…` a few times over would fill the memory
                raise _Error(f"the expansion is too large (over {MAX_EXPANSION >> 20} MiB)")
            return value, True
        self.unmatched.add(name)
        return "", False

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Process until ``stop`` (consumed) or the end of input when ``stop`` is empty."""
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process_stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        esc = self.lex.escape_token
        handlers: dict[str, Callable[[], str]] = {"$": self.process_dollar}
        if not self.lex.skip_process_quotes:
            handlers["'"] = self.process_single_quote
            handlers['"'] = self.process_double_quote
        while self.pos < len(self.src):
            ch = self.src[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), words.get()
            fn = handlers.get(ch)
            if fn is not None:
                tmp = fn()
                result.append(tmp)
                if ch == "$":
                    words.add_string(tmp)
                else:
                    words.add_raw(tmp)
                continue
            self.pos += 1
            if ch == esc:
                if self.raw_escapes:
                    words.add_raw(ch)
                    result.append(ch)
                ch = self.next()
                if not ch:
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise _Error(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def process_single_quote(self) -> str:
        raw = self.lex.raw_quotes
        opening = self.next()
        result = [opening] if raw else []
        while True:
            ch = self.next()
            if not ch:
                raise _Error("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if raw:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def process_double_quote(self) -> str:
        raw = self.lex.raw_quotes
        esc = self.lex.escape_token
        opening = self.next()
        result = [opening] if raw else []
        while True:
            p = self.peek()
            if not p:
                raise _Error("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                ch = self.next()
                if raw:
                    result.append(ch)
                return "".join(result)
            if p == "$":
                result.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == esc:
                if self.raw_escapes:
                    result.append(ch)
                nxt = self.peek()
                if not nxt:
                    continue  # escape at the end of the word is dropped
                if nxt in ('"', "$", esc):
                    ch = self.next()
            result.append(ch)

    def process_name(self) -> str:
        name: list[str] = []
        while self.pos < len(self.src):
            ch = self.src[self.pos]
            if not name and ch.isdecimal():
                while self.pos < len(self.src) and self.src[self.pos].isdecimal():
                    name.append(self.src[self.pos])
                    self.pos += 1
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                self.pos += 1
                return ch
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name.append(ch)
            self.pos += 1
        return "".join(name)

    def process_dollar(self) -> str:
        self.next()  # the '$'
        skip_unset = self.lex.skip_unset_env
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "$" + name
            return value
        self.next()  # the '{'
        p = self.peek()
        if not p:
            raise _Error("syntax error: missing '}'")
        if p in "{}:":
            raise _Error("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        chs = ch or "\ufffd"  # Go: string(scanner.EOF)
        null_is_unset = False
        if ch == "}":
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "${" + name + "}"
            return value
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            chs += ch or "\ufffd"
        elif ch == "/":
            return self._process_replace(name)
        elif ch not in ("+", "-", "?", "#", "%") or not ch:
            raise _Error(f"unsupported modifier ({chs}) in substitution")
        raw_escapes = ch in ("#", "%") and ch != ""
        if null_is_unset and raw_escapes:
            raise _Error(f"unsupported modifier ({chs}) in substitution")
        try:
            word, _ = self.process_stop_on("}", raw_escapes)
        except _Error:
            if not self.peek():
                raise _Error("syntax error: missing '}'") from None
            raise
        value, found = self.get_env(name)
        if skip_unset and not found:
            return "${" + name + chs + word + "}"
        if ch == "-":
            return word if not found or (null_is_unset and value == "") else value
        if ch == "+":
            return "" if not found or (null_is_unset and value == "") else word
        if ch == "?":
            if not found:
                raise _Error(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _Error(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("%", "#"):
            greedy = False
            if word[:1] == ch:
                greedy = True
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise _Error(f"unsupported modifier ({chs}) in substitution")

    def _process_replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.process_stop_on("/", True)
        except _Error:
            if not self.peek():
                raise _Error("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.process_stop_on("}", True)
        except _Error:
            if not self.peek():
                raise _Error("syntax error: missing '}'") from None
            raise
        value, found = self.get_env(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        try:
            glob = _shell_pattern(pattern)
        except _Error as e:
            raise _Error(f"invalid pattern ({pattern}) in substitution: {e}") from None
        if replace_all:
            return _go_replace_all(glob, value, replacement)
        starts = glob.match_starts(value)
        if starts:  # the leftmost match, as long as it goes (Go's leftmost-first with greedy stars)
            start = starts[0]
            value = value[:start] + replacement + value[glob.ends(value, start)[-1]:]
        return value


def _shell_pattern(pattern: str) -> Glob:
    """``convertShellPatternToRegex``: ``*``, ``?`` and ``\\`` escapes; no bracket expressions.

    BuildKit builds a Go regexp; this is the same language as a linear-time `Glob` (``*`` and ``?`` stop
    at a newline, as Go's ``.`` does). Greedy stars give the longest match, lazy ones the shortest.
    """
    tokens: list[Token] = []
    i, n = (1 if pattern.startswith("\ufeff") else 0), len(pattern)  # text/scanner skips a leading BOM
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            tokens.append(Token(STAR, "\n"))
            continue
        if tok == "?":
            tokens.append(Token(ONE, "\n"))
            continue
        if tok == "\\":
            if i < n and pattern[i] in "}/":
                continue  # escaped } and / inside ${} are not part of the pattern
            tok = pattern[i] if i < n else ""
            i += 1
            if tok not in ("*", "?", "\\") or not tok:
                raise _Error(f"invalid escape '\\{tok or chr(0xFFFD)}'")
        tokens.append(Token(LIT, tok))
    return Glob(tuple(merge_stars(tokens)))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    try:
        glob = _shell_pattern(pattern)
    except _Error as e:
        raise _Error(f"invalid pattern ({pattern}) in substitution: {e}") from None
    ends = glob.ends(value)
    if not ends:
        return value
    return value[ends[-1] if greedy else ends[0]:]


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping ``\\x`` escapes in front of their character."""
    out: list[str] = []
    i, last = 0, len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            out.append(pattern[i: i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(reversed(out))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _go_expand(template: str, matched: str) -> str:
    """Go's ``Regexp.Expand`` for a pattern without groups: ``$0`` is the match, other names are empty."""
    out: list[str] = []
    while template:
        before, sep, after = template.partition("$")
        if not sep:
            break
        out.append(before)
        template = after
        if template.startswith("$"):
            out.append("$")
            template = template[1:]
            continue
        rest = template
        brace = rest.startswith("{")
        if brace:
            rest = rest[1:]
        i = 0
        while i < len(rest) and (rest[i].isalpha() or rest[i].isdecimal() or rest[i] == "_"):
            i += 1
        if i == 0 or (brace and (i >= len(rest) or rest[i] != "}")):
            out.append("$")
            continue
        name = rest[:i]
        template = rest[i + 1:] if brace else rest[i:]
        if name == "0":
            out.append(matched)
    out.append(template)
    return "".join(out)


def _go_replace_all(glob: Glob, src: str, repl: str) -> str:
    """Go's ``ReplaceAllString`` (an empty match right after a match is not replaced)."""
    out: list[str] = []
    starts = glob.match_starts(src)
    size = 0
    last_end = 0
    search = 0
    while search <= len(src):
        k = bisect.bisect_left(starts, search)
        if k == len(starts):
            break
        start = starts[k]
        end = glob.ends(src, start)[-1]
        out.append(src[last_end:start])
        if end > last_end or start == 0:
            out.append(_go_expand(repl, src[start:end]))
            size += len(out[-1])
            if size > MAX_EXPANSION:
                raise _Error(f"the expansion is too large (over {MAX_EXPANSION >> 20} MiB)")
        last_end = end
        search = search + 1 if search + 1 > end else end
    out.append(src[last_end:])
    return "".join(out)


class ShellLex:
    """BuildKit's shell word lexer.

    ``raw_quotes`` keeps the quote characters, ``raw_escapes`` keeps the escape tokens,
    ``skip_unset_env`` leaves references to unset variables verbatim, ``skip_process_quotes``
    treats quotes as ordinary characters.
    """

    def __init__(self, escape_token: str = "\\", *, raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset_env: bool = False, skip_process_quotes: bool = False) -> None:
        if escape_token not in ("\\", "`"):
            raise ValueError(f"invalid escape token {escape_token!r}")
        self.escape_token = escape_token
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset_env = skip_unset_env
        self.skip_process_quotes = skip_process_quotes
        self.produced = 0
        """Characters all the expansions of this lexer substituted: one lexer serves a whole Dockerfile."""

    def process(self, word: str, env: Mapping[str, str]) -> ProcessWordResult:
        """Process ``word`` once: the joined result, the split words and the variables looked up."""
        sw = _Word(self, word, env)
        try:
            result, words = sw.process_stop_on("", sw.raw_escapes)
            self.produced += sw.expanded + (len(result) if sw.expanded else 0)
            if self.produced > MAX_TOTAL_EXPANSION:
                # each word is capped, but forty lines of `ENV Bn=${A//a/…}` would still take minutes and GBs
                raise _Error(f"the Dockerfile's expansions are too large (over {MAX_TOTAL_EXPANSION >> 20} MiB "
                             "in all)")
        except _Error as e:
            raise ShellExpansionError(f"failed to process {shorten(go_quote(word))}: {e}") from None
        except RecursionError:  # Go's growable stack has no such limit; Python's nests a few hundred levels
            raise ShellExpansionError(f"failed to process {shorten(go_quote(word))}: expansion nested too deeply"
                                      ) from None
        return ProcessWordResult(result, words, sw.matched, sw.unmatched)

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """One word: quotes removed, escapes resolved, variables expanded (inner spaces kept)."""
        return self.process(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Split into words after expansion; quoted parts are not split."""
        return self.process(word, env).words

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str]]:
        """Like :meth:`process_word`, also returning the names of the variables found in ``env``."""
        res = self.process(word, env)
        return res.result, res.matched
