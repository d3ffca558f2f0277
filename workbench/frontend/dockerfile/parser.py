"""The Dockerfile parser: directives, escapes, line continuations, JSON/shell forms, heredocs → nodes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_HEREDOC_INSTRUCTIONS = {"run", "copy", "add"}
_JSON_OR_STRING = {"run", "cmd", "entrypoint", "shell"}
_JSON_OR_LIST = {"copy", "add", "volume"}


class DockerfileParseError(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"{message}" + (f" (line {line})" if line else ""))
        self.message = message
        self.line = line


@dataclass
class Heredoc:
    name: str
    content: str
    expand: bool
    chomp: bool


@dataclass
class Node:
    keyword: str
    flags: list[str]
    args: list[str]
    json_form: bool
    original: str
    start_line: int
    end_line: int
    heredocs: list[Heredoc] = field(default_factory=list)
    next_node: Node | None = None

    def dump(self) -> str:
        parts = [self.keyword]
        if self.flags:
            parts.append("[" + " ".join(_go_quote(f) for f in self.flags) + "]")
        if self.next_node is not None:
            parts.append(self.next_node.dump())
        else:
            parts += [_go_quote(a) for a in self.args]
        return "(" + " ".join(parts) + ")"


@dataclass
class ParseResult:
    children: list[Node]
    escape_token: str
    directives: dict[str, str]
    warnings: list[str]

    def dump(self) -> str:
        return "\n".join(c.dump() for c in self.children) + "\n"


_GO_CONTROL = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch in _GO_CONTROL:
            out.append(_GO_CONTROL[ch])
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _split_words(text: str, escape: str) -> list[str]:
    """Whitespace-separated words; quotes and escapes are kept, they group but are not removed."""
    words, cur, quote, i = [], [], "", 0
    while i < len(text):
        c = text[i]
        if c == escape and i + 1 < len(text):
            cur += [c, text[i + 1]]
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
            cur.append(c)
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c.isspace():
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        words.append("".join(cur))
    return words


def _parse_env(rest: str, escape: str, keyword: str, line: int) -> list[str]:
    words = _split_words(rest, escape)
    if not words:
        raise DockerfileParseError(f"{keyword.upper()} requires at least one argument", line)
    if "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        parts = rest.strip().split(None, 1)
        if len(parts) < 2:
            raise DockerfileParseError(f"{keyword.upper()} names can not be blank" if not parts else
                                       f"{keyword.upper()} must have two arguments", line)
        return [parts[0], parts[1].strip(), ""]
    out = []
    for w in words:
        if "=" not in w:
            raise DockerfileParseError(f"Syntax error - can't find = in {w!r}. Must be of the form: name=value", line)
        k, _, v = w.partition("=")
        out += [k, v, "="]
    return out


def _maybe_json(rest: str) -> list[str] | None:
    text = rest.strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _extract_flags(rest: str) -> tuple[list[str], str]:
    flags = []
    while True:
        m = re.match(r"\s*(--\S*)(\s+|$)", rest)
        if not m:
            break
        rest = rest[m.end():]
        if m.group(1) == "--":
            break
        flags.append(m.group(1))
    return flags, rest.strip()


def _node(keyword: str, rest: str, escape: str, original: str, start: int, end: int) -> Node:
    flags, rest = _extract_flags(rest)
    json_form = False
    next_node = None
    if keyword in ("env", "label"):
        args = _parse_env(rest, escape, keyword, start)
    elif keyword == "onbuild":
        m = re.match(r"\s*(\S+)\s*(.*)$", rest, re.S)
        if not m:
            raise DockerfileParseError("ONBUILD requires at least one argument", start)
        inner_kw = m.group(1).lower()
        if inner_kw in ("onbuild", "from", "maintainer"):
            raise DockerfileParseError(f"{inner_kw.upper()} isn't allowed as an ONBUILD trigger", start)
        next_node = _node(inner_kw, m.group(2), escape, rest, start, end)
        args = []
    elif keyword in _JSON_OR_STRING or keyword in _JSON_OR_LIST:
        parsed = _maybe_json(rest)
        if parsed is not None:
            args, json_form = parsed, True
        elif keyword in _JSON_OR_LIST:
            args = rest.split()  # BuildKit splits these on whitespace alone, quotes included
        else:
            args = [rest] if rest else []
    elif keyword == "healthcheck":
        m = re.match(r"\s*(\S+)\s*(.*)$", rest, re.S)
        if not m:
            args = []
        else:
            parsed = _maybe_json(m.group(2))
            json_form = parsed is not None
            args = [m.group(1)] + (parsed if parsed is not None else ([m.group(2)] if m.group(2) else []))
    else:
        args = _split_words(rest, escape)
    return Node(keyword, flags, args, json_form, original, start, end, next_node=next_node)


def parse(text: str) -> ParseResult:
    lines = text.replace("\r\n", "\n").split("\n")
    directives: dict[str, str] = {}
    escape = "\\"
    idx = 0
    while idx < len(lines):
        m = _DIRECTIVE.match(lines[idx].strip())
        if not m or m.group(1).lower() not in ("syntax", "escape", "check") or m.group(1).lower() in directives:
            break
        directives[m.group(1).lower()] = m.group(2)
        idx += 1
    if "escape" in directives:
        escape = directives["escape"]
        if escape not in ("\\", "`"):
            raise DockerfileParseError(f"invalid escape token '{escape}' does not match ` or \\", 1)
    children: list[Node] = []
    warnings: list[str] = []

    def continues(s: str) -> tuple[bool, str]:
        stripped = s.rstrip(" \t")
        trailing = len(stripped) - len(stripped.rstrip(escape))
        if trailing % 2 == 1:  # an escaped escape token at the end is not a continuation
            return True, stripped[: -len(escape)]
        return False, s

    while idx < len(lines):
        raw = lines[idx]
        start = idx + 1
        idx += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cont, body = continues(raw.lstrip())
        original = [raw]
        parts = [body]
        while cont and idx < len(lines):
            nxt = lines[idx]
            idx += 1
            original.append(nxt)
            if nxt.strip().startswith("#"):
                continue
            if not nxt.strip():
                warnings.append(f"empty continuation line found in instruction at line {start}")
                continue
            cont, body = continues(nxt)
            parts.append(body)
        line_text = "".join(parts)
        m = re.match(r"\s*(\S+)(.*)$", line_text, re.S)
        if not m:
            continue
        keyword = m.group(1).lower()
        rest = m.group(2).strip()
        heredocs: list[Heredoc] = []
        if keyword in _HEREDOC_INSTRUCTIONS:
            for hm in _HEREDOC.finditer(rest):
                chomp, quote, name = hm.group(1) == "-", hm.group(2), hm.group(3)
                content = []
                while idx < len(lines):
                    body_line = lines[idx]
                    idx += 1
                    original.append(body_line)
                    check = body_line.lstrip("\t") if chomp else body_line
                    if check == name:
                        break
                    content.append(body_line.lstrip("\t") if chomp else body_line)
                else:
                    raise DockerfileParseError(f"unterminated heredoc {name}", start)
                heredocs.append(Heredoc(name, "\n".join(content) + "\n", not quote, chomp))
        node = _node(keyword, rest, escape, "\n".join(original), start, idx if len(original) > 1 else start)
        node.heredocs = heredocs
        if keyword == "env" and not node.args:
            raise DockerfileParseError("ENV must have two arguments", start)
        children.append(node)
    if not children:
        raise DockerfileParseError("file with no instructions", None)
    return ParseResult(children, escape, directives, warnings)
