"""`.dockerignore` patterns, matched as BuildKit's patternmatcher does (last match wins, `!` re-includes)."""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass
from pathlib import Path

from workbench.frontend.dockerfile.wildcard import (
    CLASS,
    DIRENTRY,
    DIRLOOP,
    LIT,
    ONE,
    STAR,
    Glob,
    Token,
    merge_stars,
)

_WILDCARDS = frozenset("*?[\\")


@dataclass(frozen=True)
class _Pattern:
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
        self.patterns: list[_Pattern] = []
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
            self.patterns.append(_Pattern(text, glob, exclusion))

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


def load_dockerignore(context: Path, dockerfile: Path | None = None) -> list[str]:
    """Patterns from `<Dockerfile>.dockerignore` beside the Dockerfile, else `.dockerignore` in the context."""
    candidates = []
    if dockerfile is not None:
        candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    candidates.append(context / ".dockerignore")
    for c in candidates:
        if c.is_file():
            # bytes that are not UTF-8 stay as surrogate escapes, as the context's own file names do
            return c.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    return []
