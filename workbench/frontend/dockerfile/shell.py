"""Dockerfile word processing: quotes, escapes and `$VAR` / `${VAR...}` expansion (BuildKit's shell/lex.go)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping


class ShellExpansionError(Exception):
    pass


class ShellLex:
    def __init__(self, escape_token: str = "\\") -> None:
        self.escape = escape_token

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        return self._process(word, env, split=False)[0] if word else ""

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        return self._process(word, env, split=True)

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str]]:
        used: set[str] = set()

        class _Spy(dict[str, str]):
            def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
                used.add(key)
                return env.get(key, default)

            def __contains__(self, key: object) -> bool:
                used.add(str(key))
                return key in env

        return self.process_word(word, _Spy()), used

    def _process(self, word: str, env: Mapping[str, str], split: bool) -> list[str]:
        words: list[str] = []
        cur: list[str] = []
        has = False
        i, n = 0, len(word)
        while i < n:
            c = word[i]
            if split and c in " \t\r\n":
                if has:
                    words.append("".join(cur))
                    cur, has = [], False
                i += 1
                continue
            has = True
            if c == self.escape:
                if i + 1 < n:
                    cur.append(word[i + 1])
                    i += 2
                else:
                    i += 1
                continue
            if c == "'":
                end = word.find("'", i + 1)
                if end == -1:
                    raise ShellExpansionError(f"unmatched single quote in {word!r}")
                cur.append(word[i + 1:end])
                i = end + 1
                continue
            if c == '"':
                i += 1
                while i < n and word[i] != '"':
                    d = word[i]
                    if d == self.escape and i + 1 < n and word[i + 1] in ('"', "$", self.escape):
                        cur.append(word[i + 1])
                        i += 2
                    elif d == "$":
                        value, i = self._dollar(word, i, env)
                        cur.append(value)
                    else:
                        cur.append(d)
                        i += 1
                if i >= n:
                    raise ShellExpansionError(f"unmatched double quote in {word!r}")
                i += 1
                continue
            if c == "$":
                value, i = self._dollar(word, i, env)
                if split and value:
                    parts = value.split()
                    if value[0].isspace() and has and cur:
                        words.append("".join(cur))
                        cur = []
                    for p in parts[:-1]:
                        cur.append(p)
                        words.append("".join(cur))
                        cur = []
                    if parts:
                        cur.append(parts[-1])
                    if value[-1].isspace():
                        words.append("".join(cur))
                        cur, has = [], False
                else:
                    cur.append(value)
                continue
            cur.append(c)
            i += 1
        if has or not split:
            words.append("".join(cur))
        return words

    def _dollar(self, word: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
        n = len(word)
        i += 1
        if i >= n:
            return "$", i
        if word[i] == "{":
            end = self._closing_brace(word, i)
            body = word[i + 1:end]
            return self._braced(body, env), end + 1
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]", word[i:])
        if not m:
            return "$", i
        return env.get(m.group(0)) or "", i + m.end()

    @staticmethod
    def _closing_brace(word: str, start: int) -> int:
        depth = 0
        for j in range(start, len(word)):
            if word[j] == "{":
                depth += 1
            elif word[j] == "}":
                depth -= 1
                if depth == 0:
                    return j
        raise ShellExpansionError(f"missing '}}' in {word!r}")

    def _braced(self, body: str, env: Mapping[str, str]) -> str:
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*|[0-9])(.*)$", body, re.S)
        if not m:
            raise ShellExpansionError(f"bad substitution: ${{{body}}}")
        name, rest = m.group(1), m.group(2)
        value = env.get(name)
        is_set = value is not None
        if not rest:
            return value or ""
        for op in (":-", ":+", ":?", "-", "+", "?", "##", "#", "%%", "%", "//", "/"):
            if rest.startswith(op):
                arg = rest[len(op):]
                break
        else:
            raise ShellExpansionError(f"bad substitution: ${{{body}}}")
        word = lambda: self.process_word(arg, env)  # noqa: E731 - only expanded when used
        if op == ":-":
            return value if value else word()
        if op == "-":
            return value if is_set else word()  # type: ignore[return-value]
        if op == ":+":
            return word() if value else ""
        if op == "+":
            return word() if is_set else ""
        if op in (":?", "?"):
            if (op == ":?" and not value) or (op == "?" and not is_set):
                raise ShellExpansionError(f"{name}: {word() or 'is not allowed to be unset'}")
            return value or ""
        value = value or ""
        if op in ("#", "##"):
            pat = word()
            cands = range(len(value) + 1) if op == "#" else range(len(value), -1, -1)
            for k in cands:
                if fnmatch.fnmatchcase(value[:k], pat):
                    return value[k:]
            return value
        if op in ("%", "%%"):
            pat = word()
            cands = range(len(value), -1, -1) if op == "%" else range(len(value) + 1)
            for k in cands:
                if fnmatch.fnmatchcase(value[k:], pat):
                    return value[:k]
            return value
        pat, _, repl = arg.partition("/")
        pat, repl = self.process_word(pat, env), self.process_word(repl, env)
        if not pat:
            return value
        return value.replace(pat, repl) if op == "//" else value.replace(pat, repl, 1)
