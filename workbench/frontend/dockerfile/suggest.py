"""BuildKit's ``util/suggest``: the "did you mean …?" hint for a misspelt name."""

from __future__ import annotations


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _match_case(option: str, original: str) -> str:
    if original == original.lower():
        return option.lower()
    if original == original.upper():
        return option.upper()
    return option


def search(value: str, options: list[str], case_sensitive: bool = True) -> str:
    """``suggest.Search``: the closest option within distance 2, "" on an exact match or none close.

    Case-insensitive, the match takes the value's case when the value is all lower or all upper case."""
    original = value
    if not case_sensitive:
        value = value.lower()
    match, best = "", 3
    for opt in options:
        if not case_sensitive:
            opt = opt.lower()
        if opt == value:
            return ""
        d = levenshtein(value, opt)
        if d < best:
            match, best = (opt if case_sensitive else _match_case(opt, original)), d
    return match
