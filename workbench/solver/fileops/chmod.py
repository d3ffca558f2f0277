"""Symbolic --chmod: a chmod(1) mode parsed as BSD setmode(3) does (BuildKit uses tonistiigi/dchapes-mode)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from workbench.solver.fileops.errors import FileActionError

_SUID, _SGID, _STXT = 0o4000, 0o2000, 0o1000
_STANDARD = _SUID | _SGID | 0o777
_WHO = {"a": _STANDARD, "u": _SUID | 0o700, "g": _SGID | 0o070, "o": 0o007}
_CLEAR, _SET, _UBITS, _GBITS, _OBITS = 1, 2, 4, 8, 16
_SHIFTS = ((6, _UBITS), (3, _GBITS), (0, _OBITS))


@dataclass(frozen=True)
class ModeSet:
    """A parsed chmod mode: (command, copy flags, bits) steps applied in order to permission bits."""

    cmds: tuple[tuple[str, int, int], ...]

    def apply(self, mode: int, is_dir: bool = False) -> int:
        """The bits (07777) `mode` becomes; `X` acts on a dir or when the original mode has an x bit."""
        old = new = mode & 0o7777
        for cmd, flags, bits in self.cmds:
            if cmd == "+":
                new |= bits
            elif cmd == "-":
                new &= ~bits
            elif cmd == "X":
                if old & 0o111 or is_dir:
                    new |= bits
            else:  # "u", "g", "o": copy that class's current bits to the classes in `flags`
                value = (new >> {"u": 6, "g": 3, "o": 0}[cmd]) & 0o7
                if flags & _CLEAR:
                    clear = 0o7 if flags & _SET else value
                    for shift, who in _SHIFTS:
                        if flags & who:
                            new &= ~((clear << shift) & bits)
                if flags & _SET:
                    for shift, who in _SHIFTS:
                        if flags & who:
                            new |= (value << shift) & bits
        return new & 0o7777


def _add_bits(cmds: list[tuple[str, int, int]], op: str, who: int, perm: int, mask: int) -> None:
    if op == "=":
        cmds.append(("-", 0, who or _STANDARD))
        op = "+"
    cmds.append((op, 0, (who & perm) if who else (mask & perm)))


def _add_copy(cmds: list[tuple[str, int, int]], source: str, who: int, op: str, mask: int) -> None:
    if who:
        flags = (_UBITS if who & 0o400 else 0) | (_GBITS if who & 0o040 else 0) | (_OBITS if who & 0o004 else 0)
        bits = -1
    else:
        flags, bits = _UBITS | _GBITS | _OBITS, mask
    flags |= {"+": _SET, "-": _CLEAR, "=": _SET | _CLEAR}[op]
    cmds.append((source, flags, bits))


def parse_chmod(text: str, umask: int = 0) -> ModeSet:
    """Parse an octal (<= 07777) or symbolic chmod(1) mode as BuildKit does; FileActionError if it is invalid.

    Symbolic: comma-separated clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`. A clause without who (`+x`) is
    masked by `umask` (buildkitd runs with umask 0, so it means `a`); `X` only acts with `+`; `s`/`t` are
    ignored for `o` alone; `=` with no perms clears the class.
    """

    def invalid() -> FileActionError:
        return FileActionError(f"invalid chmod parameter '{text}': invalid syntax")

    if not text:
        raise invalid()
    if "0" <= text[0] <= "9":
        if not re.fullmatch(r"[0-7]+", text) or int(text, 8) > 0o7777:
            raise invalid()
        return ModeSet((("-", 0, 0o7777), ("+", 0, int(text, 8))))
    mask = ~umask
    cmds: list[tuple[str, int, int]] = []
    i, n = 0, len(text)
    equal_done = False
    while True:
        who = 0
        while i < n and text[i] in _WHO:
            who |= _WHO[text[i]]
            i += 1
        while True:  # one operator and its perms; repeats for `u+r-w`
            if i >= n or text[i] not in "+-=":
                raise invalid()
            op = text[i]
            i += 1
            if op == "=":
                equal_done = False
            who &= ~_STXT
            perm = perm_x = 0
            while True:
                c = text[i] if i < n else ""
                if c == "r":
                    perm |= 0o444
                elif c == "w":
                    perm |= 0o222
                elif c == "x":
                    perm |= 0o111
                elif c == "X":
                    if op == "+":
                        perm_x = 0o111
                elif c == "s":
                    if who == 0 or who & ~0o007:
                        perm |= _SUID | _SGID
                elif c == "t":
                    if who == 0 or who & ~0o007:
                        who |= _STXT
                        perm |= _STXT
                elif c in ("u", "g", "o"):
                    if perm:
                        _add_bits(cmds, op, who, perm, mask)
                        perm = 0
                    if op == "=":
                        equal_done = True
                    if perm_x:
                        _add_bits(cmds, "X", who, perm_x, mask)
                        perm_x = 0
                    _add_copy(cmds, c, who, op, mask)
                else:
                    if perm or (op == "=" and not equal_done):
                        if op == "=":
                            equal_done = True
                        _add_bits(cmds, op, who, perm, mask)
                    if perm_x:
                        _add_bits(cmds, "X", who, perm_x, mask)
                    break
                i += 1
            if i >= n:
                return ModeSet(tuple(cmds))
            if text[i] == ",":
                i += 1
                break
