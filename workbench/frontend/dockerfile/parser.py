"""Dockerfile parser with BuildKit's ``frontend/dockerfile/parser`` semantics (Dockerfile 1.14).

Parser directives, escape token, line continuations, per-instruction line parsers (JSON or
shell form, ENV/LABEL key/value, flags), ONBUILD nesting and heredocs; ``dump()`` reproduces
BuildKit's ``Node.Dump()`` output.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from workbench.frontend.dockerfile.shell import GO_SPACES, ShellExpansionError, ShellLex, go_quote
from workbench.frontend.dockerfile.suggest import search

__all__ = ["DockerfileParseError", "Heredoc", "HeredocError", "Node", "ParseResult", "chomp_heredoc_content",
           "must_parse_heredoc", "parse", "parse_heredoc", "unknown_instruction"]

_DIRECTIVE_KEY = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=")
_RE2_SPACES = "\t\n\f\r "  # RE2's \s
_VALID_DIRECTIVES = ("syntax", "escape", "check")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"([0-9]*)<<(-?)([^<]*)", re.DOTALL)
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})
# command.Commands: the instructions instructions.Parse knows (any other is kept by the parser, as parseIgnore)
INSTRUCTIONS = ("add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
                "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir")
_MAX_LINE_BYTES = 64 * 1024  # bufio.MaxScanTokenSize
_BYTE_SPACES = frozenset(b"\t\n\v\f\r \x85\xa0")  # unicode.IsSpace(rune(byte))
_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")  # undecodable bytes (surrogateescape)


class DockerfileParseError(Exception):
    """A Dockerfile syntax error; ``line`` is 1-based."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"{message} (line {line})")
        self.message = message
        self.line = line


class HeredocError(DockerfileParseError, ValueError):
    """``ParseHeredoc``'s own error (no line: it is about one word); also a ``ValueError`` for older callers."""


@dataclass
class Heredoc:
    """A heredoc attached to RUN/COPY/ADD.

    ``content`` is the body (lines with their newlines, terminator excluded); for ``<<-`` leading
    tabs are already stripped from every body line. ``expand`` is False when any part of the
    delimiter word was quoted.
    """

    name: str
    content: str
    expand: bool
    chomp: bool
    file_descriptor: int = 0


@dataclass
class Node:
    """One instruction.

    ``original`` is BuildKit's ``Node.Original``: the logical line with continuations joined
    (escape + newline removed, comment lines dropped); ``source`` is the raw text of the
    instruction's lines ``start_line..end_line`` (heredoc bodies included).
    """

    keyword: str
    flags: list[str]
    args: list[str]
    json_form: bool
    original: str
    start_line: int
    end_line: int
    heredocs: list[Heredoc] = field(default_factory=list)
    next_node: Node | None = None
    source: str = ""

    @property
    def value(self) -> str:
        """The keyword as written (BuildKit's ``Node.Value``; ``keyword`` is lower-cased)."""
        return _WHITESPACE.split(self.original.strip(GO_SPACES), maxsplit=1)[0]

    def dump(self) -> str:
        """BuildKit's ``Node.Dump()`` form, e.g. ``(copy ["--from=a"] "x" "/y")``."""
        parts = [self.keyword.lower()]
        if self.flags:
            parts.append("[" + " ".join(go_quote(f) for f in self.flags) + "]")
        if self.next_node is not None:
            parts.append(self.next_node.dump())
        parts.extend(go_quote(a) for a in self.args)
        return "(" + " ".join(parts).strip(GO_SPACES) + ")"


@dataclass
class ParseResult:
    """The parsed file: instructions, escape token, parser directives and warnings."""

    children: list[Node]
    escape_token: str
    directives: dict[str, str]
    warnings: list[str]

    def dump(self) -> str:
        """The corpus ``result`` format: one dumped instruction per line."""
        return "".join(c.dump() + "\n" for c in self.children)


# -- line parsers (line_parsers.go) -----------------------------------------------------------

class _NotStringArray(Exception):
    pass


def _reject_constant(name: str) -> object:
    raise ValueError(name)  # Go's encoding/json has no NaN/Infinity


def _go_number(text: str) -> float:
    """Go decodes JSON numbers into float64: out of range is an error (underflow to 0 is not)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} out of range")
    return value


_GO_JSON_MAX_DEPTH = 10000  # encoding/json's maxNestingDepth
_JSON_TOKEN = re.compile(r'[ \t\n\r]*(?:("(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")'
                         r"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)|(true|false|null)|([\[\]{}:,]))")


def _deep_json_array(text: str) -> list[object] | None:
    """Validate JSON without recursion (for nesting too deep for :func:`json.loads`).

    Returns the top-level array with nested containers as placeholder lists, None when invalid
    (including Go's nesting limit and out-of-range numbers).
    """
    top: list[object] = []
    stack: list[str] = []  # open containers
    expect = "value"  # value | value_or_close | key | key_or_close | colon | comma_or_close | end
    pos, n = 0, len(text)
    while True:
        m = _JSON_TOKEN.match(text, pos)
        if m is None:
            return top if expect == "end" and not text[pos:].strip(" \t\n\r") else None
        pos = m.end()
        string, number, literal, punct = m.groups()
        if expect in ("key", "key_or_close") and string is not None:
            expect = "colon"
        elif expect == "colon" and punct == ":":
            expect = "value"
        elif expect == "comma_or_close" and punct == ",":
            expect = "value" if stack[-1] == "[" else "key"
        elif expect in ("value", "value_or_close") and punct in ("[", "{"):
            if len(stack) == 1 and stack[0] == "[":
                top.append([])
            stack.append(punct)
            if len(stack) > _GO_JSON_MAX_DEPTH:
                return None
            expect = "value_or_close" if punct == "[" else "key_or_close"
        elif (punct == "]" and expect in ("value_or_close", "comma_or_close") and stack[-1] == "[") or (
                punct == "}" and expect in ("key_or_close", "comma_or_close") and stack[-1] == "{"):
            stack.pop()
            expect = "comma_or_close" if stack else "end"
        elif expect in ("value", "value_or_close") and punct is None:
            if number is not None:
                try:
                    _go_number(number)
                except ValueError:
                    return None
            if len(stack) == 1:
                top.append(json.loads(string) if string is not None else number or literal)
            expect = "comma_or_close" if stack else "end"
        else:
            return None
        if pos >= n and expect != "end":
            return None


def _parse_json(rest: str) -> list[str] | None:
    """A JSON array of strings, None when ``rest`` is not valid JSON array syntax."""
    rest = rest.lstrip(GO_SPACES)
    if not rest.startswith("["):
        return None
    value: object
    try:
        value = json.loads(rest, parse_constant=_reject_constant, parse_float=_go_number, parse_int=_go_number)
    except ValueError:
        return None
    except RecursionError:
        value = _deep_json_array(rest)
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _NotStringArray("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _parse_words(rest: str, escape: str) -> list[str]:
    """Split on whitespace keeping quotes and escapes (``parseWords``)."""
    words: list[str] = []
    buf: list[str] = []
    blank_ok = False
    in_quote = ""
    in_word = False
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch in GO_SPACES:
                i += 1
                continue
            in_word = True
        if not in_quote:
            if ch in GO_SPACES:
                if blank_ok or buf:
                    words.append("".join(buf))
                buf, blank_ok, in_word = [], False, False
                i += 1
                continue
            if ch in "'\"":
                in_quote, blank_ok = ch, True
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue  # escape token at the end of the line is dropped
                buf.append(ch)
                i += 1
                ch = rest[i]
            buf.append(ch)
            i += 1
            continue
        if ch == in_quote:
            in_quote = ""
        elif ch == escape and in_quote != "'":
            if i + 1 == n:
                in_quote = ""
                i += 1
                continue
            buf.append(ch)
            i += 1
            ch = rest[i]
        buf.append(ch)
        i += 1
    if in_word and (blank_ok or buf):
        words.append("".join(buf))
    if _SURROGATE_ESCAPES.search(rest):
        # Go decodes rune by rune here: each undecodable byte becomes U+FFFD
        words = [_SURROGATE_ESCAPES.sub("\ufffd", w) for w in words]
    return words


def _split_whitespace(rest: str) -> list[str]:
    return _WHITESPACE.split(rest) if rest else []


def _parse_name_val(rest: str, key: str, escape: str) -> list[str]:
    """ENV/LABEL: flat ``[key, value, sep, ...]`` triples; sep ``"="`` or ``""`` (legacy form)."""
    words = _parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value")
        k, _, v = word.partition("=")
        out += [k, v, "="]
    return out


def _parse_maybe_json(rest: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    arr = _parse_json(rest)
    return (arr, True) if arr is not None else ([rest], False)


def _parse_maybe_json_to_list(rest: str) -> tuple[list[str], bool]:
    arr = _parse_json(rest)
    return (arr, True) if arr is not None else (_split_whitespace(rest), False)


def _parse_health(rest: str) -> tuple[list[str], bool]:
    """HEALTHCHECK: the type word, then CMD's arguments in JSON or shell form (byte-wise scan as Go)."""
    raw = rest.encode("utf-8", "surrogateescape")
    sep = 0
    while sep < len(raw) and raw[sep] not in _BYTE_SPACES:
        sep += 1
    nxt = sep
    while nxt < len(raw) and raw[nxt] in _BYTE_SPACES:
        nxt += 1
    if sep == 0:
        return [], False
    typ = raw[:sep].decode("utf-8", "surrogateescape")
    args, is_json = _parse_maybe_json(raw[nxt:].decode("utf-8", "surrogateescape"))
    return [typ, *args], is_json


def _extract_builder_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--flag[=value]`` words (``extractBuilderFlags``; byte-wise like Go, ``--`` ends flags)."""
    raw = line.encode("utf-8", "surrogateescape")
    n = len(raw)
    words: list[str] = []
    word: list[str] = []
    blank_ok = False
    in_word = False
    quote = 0
    pos = 0
    while pos <= n:
        ch = raw[pos] if pos < n else -1
        if not in_word:
            if pos == n:
                break
            if ch in _BYTE_SPACES:
                pos += 1
                continue
            if ch != 0x2D or pos + 1 == n or raw[pos + 1] != 0x2D:
                return raw[pos:].decode("utf-8", "surrogateescape"), words
            in_word = True
        if pos == n:
            w = "".join(word)
            if w != "--" and (blank_ok or w):
                words.append(w)
            break
        if not quote:
            if ch in _BYTE_SPACES:
                w = "".join(word)
                if w == "--":
                    return raw[pos:].decode("utf-8", "surrogateescape"), words
                if blank_ok or w:
                    words.append(w)
                word, blank_ok, in_word = [], False, False
                pos += 1
                continue
            if ch in (0x27, 0x22):
                quote, blank_ok = ch, True
                pos += 1
                continue
            if ch == 0x5C:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = raw[pos]
            word.append(chr(ch))
            pos += 1
            continue
        if ch == quote:
            quote = 0
            pos += 1
            continue
        if ch == 0x5C:
            if pos + 1 == n:
                quote = 0
                pos += 1
                continue
            pos += 1
            ch = raw[pos]
        word.append(chr(ch))
        pos += 1
    return "", words


def _split_command(line: str) -> tuple[str, list[str], str]:
    """``splitCommand``: the lower-cased keyword, the builder flags and the rest of the line."""
    cmdline = _WHITESPACE.split(line.strip(GO_SPACES), maxsplit=1)
    keyword = cmdline[0].lower()
    flags: list[str] = []
    rest = ""
    if len(cmdline) == 2:
        rest, flags = _extract_builder_flags(cmdline[1])
    return keyword, flags, rest.strip(GO_SPACES)


def _new_node(line: str, escape: str, start: int, end: int) -> Node:
    """``newNodeFromLine``; ``ONBUILD`` chains are unrolled (no recursion however long the chain)."""
    wrappers: list[tuple[str, list[str]]] = []
    keyword, flags, rest = _split_command(line)
    while keyword == "onbuild" and rest:
        wrappers.append((line, flags))
        line = rest
        keyword, flags, rest = _split_command(line)
    node = _leaf_node(line, keyword, flags, rest, escape, start, end)
    for original, onbuild_flags in reversed(wrappers):  # innermost first, as the recursive parser would
        _check_instruction("onbuild", [], node)
        node = Node(keyword="onbuild", flags=onbuild_flags, args=[], json_form=False, original=original,
                    start_line=start, end_line=end, next_node=node)
    return node


def _leaf_node(line: str, keyword: str, flags: list[str], rest: str, escape: str, start: int, end: int) -> Node:
    """One instruction that does not nest another (``ONBUILD`` here has no trigger)."""
    args: list[str] = []
    is_json = False
    nested: Node | None = None
    try:
        if keyword in ("add", "copy", "volume"):
            args, is_json = _parse_maybe_json_to_list(rest)
        elif keyword in ("cmd", "entrypoint", "run", "shell"):
            args, is_json = _parse_maybe_json(rest)
        elif keyword in ("expose", "from"):
            args = _split_whitespace(rest)
        elif keyword in ("maintainer", "stopsignal", "user", "workdir"):
            args = [rest] if rest else []
        elif keyword == "arg":
            args = _parse_words(rest, escape)
        elif keyword in ("env", "label"):
            args = _parse_name_val(rest, "ENV" if keyword == "env" else "LABEL", escape)
        elif keyword == "healthcheck":
            args, is_json = _parse_health(rest)
        elif keyword == "onbuild":
            nested = None  # an ONBUILD with a trigger is unrolled by _new_node
        else:
            args = [""]  # parseIgnore: unknown instructions keep no arguments
    except _NotStringArray as e:
        raise ValueError(str(e)) from None
    _check_instruction(keyword, args, nested)
    return Node(keyword=keyword, flags=flags, args=args, json_form=is_json, original=line,
                start_line=start, end_line=end, next_node=nested)


def _check_instruction(keyword: str, args: list[str], nested: Node | None) -> None:
    """Errors BuildKit raises in ``instructions/parse.go`` that need no expansion; raised here, early."""
    if keyword in ("env", "label") and not args:
        raise ValueError(f"{keyword.upper()} requires at least one argument")
    if keyword == "onbuild":
        if nested is None:
            raise ValueError("ONBUILD requires at least one argument")
        if nested.keyword == "onbuild":
            raise ValueError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if nested.keyword in ("maintainer", "from"):
            raise ValueError(f"{nested.keyword.upper()} isn't allowed as an ONBUILD trigger")


def unknown_instruction(node: Node) -> str | None:
    """``UnknownInstructionError`` for `node` as BuildKit words it (the keyword as written, a suggestion in its
    case), or None for a known instruction."""
    if node.keyword in INSTRUCTIONS:
        return None
    suggestion = search(node.value, [name.upper() for name in INSTRUCTIONS], case_sensitive=False)
    return f"unknown instruction: {node.value}" + (f" (did you mean {suggestion}?)" if suggestion else "")


# ``instructions.Parse``'s argument counts (the parser itself takes these instructions without arguments)
_AT_LEAST_ONE = frozenset({"arg", "expose", "volume", "healthcheck"})
_EXACTLY_ONE = frozenset({"user", "workdir", "stopsignal", "maintainer"})


def argument_count_error(node: Node) -> str | None:
    """BuildKit's error for an instruction given no argument where it needs one (or exactly one), else None."""
    if node.args:
        return None
    if node.keyword in _AT_LEAST_ONE:
        return f"{node.keyword.upper()} requires at least one argument"
    if node.keyword in _EXACTLY_ONE:
        return f"{node.keyword.upper()} requires exactly one argument"
    return None


# -- heredocs -----------------------------------------------------------------------------------

def must_parse_heredoc(word: str) -> Heredoc | None:
    """``MustParseHeredoc``: :func:`parse_heredoc` with its errors read as "not a heredoc"."""
    try:
        return parse_heredoc(word)
    except (HeredocError, ShellExpansionError):
        return None


def parse_heredoc(word: str) -> Heredoc | None:
    """A heredoc from one lexed word like ``<<EOF``, ``3<<-'EOF'`` (``ParseHeredoc``); None if not one.

    Raises :class:`ShellExpansionError` when the word does not lex, :class:`HeredocError` when the quoted and
    unquoted lexings disagree.
    """
    m = _HEREDOC.fullmatch(word)
    if m is None or not m.group(3):
        return None
    rest = m.group(3)
    words = ShellLex("\\", skip_unset_env=True).process_words(rest, {})
    if len(words) != 1:
        return None
    raw_words = ShellLex("\\", skip_unset_env=True, raw_quotes=True).process_words(rest, {})
    if len(raw_words) != len(words):
        raise HeredocError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw_words[0].count("'") + raw_words[0].count('"')
    return Heredoc(name=words[0], content="", expand=quotes == raw_quotes, chomp=m.group(2) == "-",
                   file_descriptor=_parse_uint(m.group(1)))


_MAX_UINT = 2**64 - 1


def _parse_uint(digits: str) -> int:
    """Go's ``strconv.ParseUint(s, 10, 0)`` as used for the heredoc fd: "" is 0, overflow saturates."""
    digits = digits.lstrip("0")
    if len(digits) > 20:  # also keeps int() clear of Python's 4300-digit conversion limit
        return _MAX_UINT
    return min(int(digits or "0"), _MAX_UINT)


def _heredocs_from_line(line: str) -> list[Heredoc]:
    lex = ShellLex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lex.process_words(line, {})
    except ShellExpansionError:
        words = []
    docs = []
    for word in words:
        doc = parse_heredoc(word)
        if doc is not None:
            docs.append(doc)
    return docs


def _can_contain_heredoc(node: Node) -> bool:
    if node.keyword == "onbuild" and node.next_node is not None:
        node = node.next_node
    return node.keyword in _HEREDOC_INSTRUCTIONS and not node.json_form


def chomp_heredoc_content(content: str) -> str:
    """Strip leading tabs from every line (``<<-``)."""
    return _LEADING_TABS.sub("", content)


# -- the file-level parser (parser.go) ---------------------------------------------------------

def _split_lines(text: str) -> list[str]:
    """Lines with their ``\\n`` kept (Go's scanLines; only ``\\n`` separates lines)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _is_comment(line: str) -> bool:
    return line.lstrip(GO_SPACES).startswith("#")


def _match_directive(text: str) -> tuple[str, str] | None:
    """``^([a-zA-Z][a-zA-Z0-9]*)\\s*=\\s*(.+?)\\s*$`` without the backtracking (quadratic in Python's re).

    The value is what lies between the blanks after ``=`` and the trailing blanks; when only blanks follow
    ``=``, the lazy group still takes one character: the last one that is not a newline.
    """
    m = _DIRECTIVE_KEY.match(text)
    if m is None:
        return None
    rest = text[m.end():]
    value = rest.strip(_RE2_SPACES)
    if not value:
        value = rest.rstrip("\n")[-1:]
    if not value or "\n" in value:
        return None  # "." does not match a newline
    return m.group(1), value


class _Directives:
    """Parser directive state (``DirectiveParser`` + escape token)."""

    def __init__(self) -> None:
        self.done = False
        self.values: dict[str, str] = {}
        self.escape = "\\"
        self.continuation = self._continuation_regex("\\")

    @staticmethod
    def _continuation_regex(esc: str) -> re.Pattern[str]:
        e = re.escape(esc)
        return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")

    def parse_line(self, line: str) -> None:
        if self.done:
            return
        if not line.startswith("#"):
            self.done = True
            return
        parsed = _match_directive(line[1:].lstrip(GO_SPACES))
        key = parsed[0].lower() if parsed else ""
        if parsed is None or key not in _VALID_DIRECTIVES:
            self.done = True
            return
        if key in self.values:
            raise ValueError(f"only one {key} parser directive can be used")
        value = parsed[1]
        self.values[key] = value
        if key == "escape":
            if value not in ("`", "\\"):
                raise ValueError(f"invalid escape token '{value}' does not match ` or \\")
            self.escape = value
            self.continuation = self._continuation_regex(value)

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Remove a trailing line-continuation escape; the bool is True when the line ends here."""
        if self.continuation.search(line):
            return self.continuation.sub(r"\1", line), False
        return line, True


_FOREIGN_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def parse(text: str) -> ParseResult:
    """Parse Dockerfile text into instructions; raises :class:`DockerfileParseError`.

    ``text`` is the file decoded as UTF-8 with ``surrogateescape`` (undecodable bytes are ``\\udc80``-
    ``\\udcff``); any other lone surrogate cannot come from bytes and is read as U+FFFD, as Go would.
    """
    text = _FOREIGN_SURROGATES.sub("\ufffd", text)
    d = _Directives()
    lines = _split_lines(text)
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    children: list[Node] = []
    warnings: list[str] = []
    total = len(lines)
    cur = 0  # lines consumed so far == 1-based number of the last consumed line

    def take() -> str:
        nonlocal cur
        line = lines[cur]
        if len(line.encode("utf-8", "surrogateescape")) > _MAX_LINE_BYTES or (
                cur == total - 1 and not line.endswith("\n")
                and len(line.encode("utf-8", "surrogateescape")) >= _MAX_LINE_BYTES):
            if not children:
                raise DockerfileParseError("file with no instructions", max(cur, 1))
            raise DockerfileParseError(
                f"dockerfile line greater than max allowed size of {_MAX_LINE_BYTES - 1}", cur + 1)
        cur += 1
        return line

    def directive(token: str) -> None:
        try:
            d.parse_line(token)
        except ValueError as e:
            raise DockerfileParseError(str(e), cur + 1) from None

    while cur < total:
        token = lines[cur].rstrip("\r\n").lstrip(GO_SPACES)
        directive(token)
        take()
        start = cur
        line, eol = d.trim_continuation("" if _is_comment(token) else token)
        if eol and not line:
            continue
        parts = [line]
        empty_continuation = False
        while not eol and cur < total:
            token = lines[cur].rstrip("\r\n")
            directive(token)
            raw = take()
            if _is_comment(raw):
                continue
            if not token.lstrip(GO_SPACES):
                empty_continuation = True
                continue
            token, eol = d.trim_continuation(token)
            parts.append(token)
        line = "".join(parts)
        if empty_continuation:
            warnings.append("Empty continuation line found in: " + line)
        try:
            child = _new_node(line, d.escape, start, cur)
        except ValueError as e:
            raise DockerfileParseError(str(e), start) from None

        if _can_contain_heredoc(child) and "<<" in line:
            try:
                docs = _heredocs_from_line(line)
            except (ValueError, ShellExpansionError) as e:
                raise DockerfileParseError(str(e), start) from None
            for doc in docs:
                body: list[str] = []
                terminated = False
                while cur < total:
                    raw = take()
                    candidate = raw.rstrip("\r\n")
                    if doc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == doc.name:
                        terminated = True
                        break
                    body.append(raw)
                if not terminated:
                    raise DockerfileParseError("unterminated heredoc", start)
                content = "".join(body)
                doc.content = chomp_heredoc_content(content) if doc.chomp else content
                child.heredocs.append(doc)
        child.start_line, child.end_line = start, cur
        child.source = "".join(lines[start - 1:cur])
        if child.next_node is not None:
            child.next_node.start_line, child.next_node.end_line = start, cur
        children.append(child)

    if not children:
        raise DockerfileParseError("file with no instructions", max(cur, 1))
    return ParseResult(children=children, escape_token=d.escape, directives=dict(d.values), warnings=warnings)
