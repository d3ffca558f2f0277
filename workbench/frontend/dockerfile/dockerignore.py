"""`.dockerignore` patterns, matched as BuildKit's patternmatcher does (last match wins, `!` re-includes)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    exclusion: bool


def _to_regex(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":  # "**/" matches zero or more directories
                    out.append("(.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


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
            self.patterns.append(_Pattern(text, _to_regex(text), exclusion))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        """True if `path` (relative, `/`-separated) or one of its parent dirs matches last as an exclude."""
        path = posixpath.normpath(path).lstrip("/")
        parents = []
        p = posixpath.dirname(path)
        while p:
            parents.append(p)
            p = posixpath.dirname(p)
        matched = False
        for pat in self.patterns:
            hit = pat.regex.match(path) is not None or any(pat.regex.match(q) for q in parents)
            if hit:
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
            return c.read_text().splitlines()
    return []
