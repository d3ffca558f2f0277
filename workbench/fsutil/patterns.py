"""Wildcard patterns matched in linear time (a bit-parallel NFA, never a backtracking regex), and the
`.dockerignore` pattern language built on them (COPY --exclude / --parents filters, the context's ignore file).

`.dockerignore` patterns and the `${var#pattern}` family are wildcards that BuildKit turns into Go
regexps (RE2: linear time). Python's `re` backtracks, so `*a*a*a*a*a*a*a*a*b` against a long name takes
seconds; here each pattern is a list of tokens whose NFA state set is one int (bit i: "about to match
token i"), advanced once per character of the text: O(len(text) * len(pattern) / word size).
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

LIT, ONE, CLASS, STAR, DIRENTRY, DIRLOOP = range(6)


@dataclass(frozen=True)
class Token:
    """One step of a pattern.

    LIT: the character `char`. ONE: any character but `char`. CLASS: a character of `chars` / `ranges`
    (or not, when `negated`). STAR: any run of characters but `char`. DIRENTRY + DIRLOOP (always in this
    order) are `(.*/)?`: nothing, or a run of characters but `char` that ends with `/`.
    """

    kind: int
    char: str = ""
    chars: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()
    negated: bool = False

    def in_class(self, c: str) -> bool:
        hit = c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges)
        return hit != self.negated


@dataclass
class Glob:
    """A compiled pattern (see `Token`); all methods take time linear in the text."""

    tokens: tuple[Token, ...]
    _masks: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        eps1 = eps2 = 0
        for i, t in enumerate(self.tokens):
            if t.kind in (STAR, DIRENTRY):
                eps1 |= 1 << i  # may skip to the next token (DIRENTRY: into its loop)
            if t.kind == DIRENTRY:
                eps2 |= 1 << i  # ... or past its loop
        self._eps1, self._eps2 = eps1, eps2
        self._accept = 1 << len(self.tokens)
        self._start = self._close(1)
        lits = [t.kind == LIT for t in self.tokens]
        head = lits.index(False) if False in lits else len(lits)
        tail = lits[::-1].index(False) if False in lits else len(lits)
        # literal ends that every match has: checked first, with str methods
        self._prefix = "".join(t.char for t in self.tokens[:head])
        self._suffix = "".join(t.char for t in self.tokens[len(lits) - tail:])

    def _close(self, s: int) -> int:
        # epsilon moves only go forward and chains are short (the compilers merge runs of stars)
        while True:
            t = s | ((s & self._eps1) << 1) | ((s & self._eps2) << 2)
            if t == s:
                return s
            s = t

    def _masks_for(self, c: str) -> tuple[int, int]:
        """(tokens that consume `c` and move on, tokens that consume `c` and stay) as bit masks."""
        found = self._masks.get(c)
        if found is not None:
            return found
        adv = stay = 0
        for i, t in enumerate(self.tokens):
            k = t.kind
            if (k == LIT and c == t.char) or (k == ONE and c != t.char) or (k == CLASS and t.in_class(c)):
                adv |= 1 << i
            elif k == STAR and c != t.char:
                stay |= 1 << i
            elif k == DIRLOOP:
                if c == "/":
                    adv |= 1 << i
                if c != t.char:
                    stay |= 1 << i
        if len(self._masks) > 4096:  # a text of many distinct characters: keep the memo small
            self._masks.clear()
        self._masks[c] = (adv, stay)
        return adv, stay

    def _step(self, s: int, c: str) -> int:
        adv, stay = self._masks.get(c) or self._masks_for(c)
        s = ((s & adv) << 1) | (s & stay)
        return self._close(s) if s & self._eps1 else s

    def match(self, text: str) -> bool:
        """Whether the whole of `text` matches."""
        if not (text.startswith(self._prefix) and text.endswith(self._suffix)):
            return False
        s = self._start
        step = self._step
        for c in text:
            s = step(s, c)
            if not s:
                return False
        return bool(s & self._accept)

    def match_path_or_parent(self, path: str) -> bool:
        """Whether `path` or one of its parent directories (a prefix ending before a `/`) matches."""
        if not path.startswith(self._prefix):
            return False
        if self._suffix and not (path.endswith(self._suffix) or self._suffix + "/" in path):
            return False
        s = self._start
        accept = self._accept
        step = self._step
        for c in path:
            if c == "/" and s & accept:
                return True
            s = step(s, c)
            if not s:
                return False
        return bool(s & accept)

    def ends(self, text: str, start: int = 0) -> list[int]:
        """The positions e for which `text[start:e]` matches, in order."""
        s = self._start
        out = [start] if s & self._accept else []
        for i in range(start, len(text)):
            s = self._step(s, text[i])
            if not s:
                break
            if s & self._accept:
                out.append(i + 1)
        return out

    def match_starts(self, text: str) -> list[int]:
        """The positions s at which some match of the pattern starts (unanchored search), in order.

        Runs the reversed pattern over the reversed text, starting it afresh at every position.
        """
        rev = Glob(_reverse(self.tokens))
        s = rev._start
        n = len(text)
        out = [n] if s & rev._accept else []
        for i in range(n - 1, -1, -1):
            s = rev._step(s, text[i]) | rev._start
            if s & rev._accept:
                out.append(i)
        out.reverse()
        return out


def _reverse(tokens: Sequence[Token]) -> tuple[Token, ...]:
    if any(t.kind in (DIRENTRY, DIRLOOP) for t in tokens):
        raise ValueError("patterns with `**/` cannot be searched backwards")
    return tuple(reversed(tokens))


def merge_stars(tokens: list[Token]) -> list[Token]:
    """Drop a star that repeats the one before it (`**` twice): the same language, shorter epsilon chains."""
    out: list[Token] = []
    for t in tokens:
        if not (out and t.kind in (STAR, DIRENTRY, DIRLOOP) and _same_star(out, t)):
            out.append(t)
    return out


def _same_star(out: list[Token], t: Token) -> bool:
    if t.kind == STAR:
        return out[-1] == t
    # `(.*/)?(.*/)?` is `(.*/)?`: skip a DIRENTRY right after a DIRLOOP, then its DIRLOOP
    if t.kind == DIRENTRY:
        return out[-1].kind == DIRLOOP
    return out[-1].kind == DIRLOOP


# --- .dockerignore patterns ------------------------------------------------------------------------------

_WILDCARDS = frozenset("*?[\\")


@dataclass(frozen=True)
class Pattern:
    """One cleaned `.dockerignore` pattern."""

    text: str
    glob: Glob | None
    """None for a pattern without wildcards (compared as a string)."""
    exclusion: bool

    def match_path_or_parent(self, path: str) -> bool:
        if self.glob is None:
            return path == self.text or path.startswith(self.text + "/")
        return self.glob.match_path_or_parent(path)


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Glob:
    """A cleaned `.dockerignore` pattern as a `Glob`: `*` and `?` stop at `/`, `**/` is zero or more
    directories, any other `**` is anything; `[...]` / `[^...]` (or `[!...]`) classes; `\\` escapes the next
    character; an unclosed `[` is literal. Like the regexp BuildKit builds, `**` never matches a newline."""
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if pattern[i:i + 1] == "*":
                i += 1
                if pattern[i:i + 1] == "/":
                    i += 1
                    tokens += [Token(DIRENTRY), Token(DIRLOOP, "\n")]
                else:
                    tokens.append(Token(STAR, "\n"))
            else:
                tokens.append(Token(STAR, "/"))
        elif c == "?":
            tokens.append(Token(ONE, "/"))
        elif c == "[":
            cls, end = _parse_class(pattern, i)
            if cls is None:
                tokens.append(Token(LIT, "["))
            else:
                tokens.append(cls)
                i = end
        elif c == "\\" and i < n:
            tokens.append(Token(LIT, pattern[i]))
            i += 1
        else:
            tokens.append(Token(LIT, c))
    return Glob(tuple(merge_stars(tokens)))


def _parse_class(pattern: str, i: int) -> tuple[Token | None, int]:
    """The class whose body starts at `i` (after `[`) and the index after its `]`; None when unclosed."""
    negated = pattern[i:i + 1] in ("^", "!")
    if negated:
        i += 1
    items: list[str] = []
    n = len(pattern)
    while i < n and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < n:
            i += 1
        items.append(pattern[i])
        i += 1
    if i >= n:
        return None, i
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(items):
        if k + 2 < len(items) and items[k + 1] == "-":
            ranges.append((items[k], items[k + 2]))
            k += 3
        else:
            chars.add(items[k])
            k += 1
    return Token(CLASS, chars=frozenset(chars), ranges=tuple(ranges), negated=negated), i + 1


class IgnoreMatcher:
    """Decides whether a context-relative path is excluded."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:].strip()
            text = posixpath.normpath(text).lstrip("/")
            if text in ("", "."):
                continue
            glob = compile_pattern(text) if _WILDCARDS.intersection(text) else None
            self.patterns.append(Pattern(text, glob, exclusion))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        """True if `path` (relative, `/`-separated) or one of its parent dirs matches last as an exclude."""
        path = posixpath.normpath(path).lstrip("/")
        matched = False
        for pat in self.patterns:
            if matched != (not pat.exclusion) and pat.match_path_or_parent(path):
                matched = not pat.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether an exclusion pattern could re-include something under an excluded `directory`."""
        prefix = posixpath.normpath(directory).lstrip("/") + "/"
        return any(p.exclusion and (p.text.startswith(prefix) or "*" in p.text) for p in self.patterns)


def may_match_below(pattern: str, directory: str) -> bool:
    """Whether some path strictly below `directory` could match `pattern` (component-wise prefix match)."""
    pparts, dparts = pattern.split("/"), directory.split("/")
    for i, part in enumerate(dparts):
        if i >= len(pparts):
            return False
        if "**" in pparts[i]:
            return True
        if not compile_pattern(pparts[i]).match(part):
            return False
    return len(pparts) > len(dparts)
