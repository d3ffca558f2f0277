"""What a stop shows in `scopes` / `variables`: the step, its environment, build args, mounts, and its
filesystem as a tree listed one directory at a time, when the client expands it.

References live for one stop (DAP: they are invalid once the build goes on) and are cleared then.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workbench.llb.ops import ExecOp, ImageSource, Vertex, config_at

if TYPE_CHECKING:
    from workbench.dap.target import Stop as Pause
    from workbench.debug.fsview import Entry

MAX_ENTRIES = 1000
"""Entries of one directory sent when the client asks for all (larger ones are paged with start/count)."""

Provider = Callable[[int, int | None], list[dict[str, Any]]]
"""(start, count) -> the variables of a reference."""
Redact = Callable[[str], str]


class References:
    """variablesReference numbers (> 0) of the current stop."""

    def __init__(self) -> None:
        self._items: dict[int, Provider] = {}
        self.listings: dict[str, list[Entry]] = {}
        """Directories listed at this stop, by path: each is listed once, then paged from here."""

    def add(self, provider: Provider) -> int:
        ref = len(self._items) + 1
        self._items[ref] = provider
        return ref

    def get(self, ref: int) -> Provider | None:
        return self._items.get(ref)

    def clear(self) -> None:
        self._items.clear()
        self.listings.clear()


def shown(name: str) -> str:
    """A file name as valid text: bytes that are not UTF-8 (kept as surrogate escapes) become `\\xff`."""
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a lone surrogate that is no escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _flat(pairs: list[tuple[str, str]], redact: Redact) -> Provider:
    items = [{"name": k, "value": redact(v), "variablesReference": 0} for k, v in pairs]
    return lambda start, count: items[start:start + count] if count else items[start:]


def platform_of(v: Vertex) -> str:
    """The platform of the image a step's filesystem starts from (the host's default when none)."""
    todo = [v]
    while todo:
        here = todo.pop(0)
        if isinstance(here.op, ImageSource):
            return here.op.platform
        todo.extend(here.inputs[:1])
    return ImageSource("", "").platform


def step_pairs(pause: Pause, reason: str) -> list[tuple[str, str]]:
    v = pause.vertex
    op = v.op
    pairs = [("step", v.name), ("line", str(v.source.start_line) if v.source else ""), ("reason", reason)]
    if pause.error:
        pairs.append(("error", pause.error))
    if isinstance(op, ExecOp):
        pairs += [("command", shlex.join(op.args)), ("workdir", op.cwd or "/"), ("user", op.user or "root")]
    else:
        c = config_at(v)
        pairs += [("command", v.instruction or v.name), ("workdir", c.workdir if c else ""),
                  ("user", (c.user or "root") if c else "")]
    pairs.append(("platform", platform_of(v)))
    return pairs


def mount_value(m: Any) -> str:
    if m.type in ("secret", "ssh"):
        return f"type={m.type}"  # never a secret's content or where it comes from
    value = f"type={m.type}"
    if m.type in ("bind", "cache") and m.source not in ("", "/"):
        value += f",source={m.source}"
    return value + (",readonly" if m.readonly else "")


def scopes(pause: Pause, reason: str, build_args: dict[str, str], refs: References, redact: Redact,
           list_dir: Callable[[str], list[Entry]]) -> list[dict[str, Any]]:
    """The scopes of the paused frame, in the contract's order; `list_dir` lists a directory of the step."""
    op = pause.vertex.op
    config = config_at(pause.vertex)  # a RUN's own env, else the stage's as it stands at this step
    env = list(config.env_map.items()) if config is not None else []
    mounts = [(m.target, mount_value(m)) for m in op.mounts] if isinstance(op, ExecOp) else []
    parts: list[tuple[str, list[tuple[str, str]]]] = [
        ("Step", step_pairs(pause, reason)), ("Environment", env),  # type: ignore[list-item]
        ("Build args", sorted(build_args.items())), ("Mounts", mounts)]
    out = [{"name": name, "variablesReference": refs.add(_flat(pairs, redact)), "namedVariables": len(pairs),
            "expensive": False} for name, pairs in parts]
    out.append({"name": "Filesystem", "variablesReference": refs.add(directory("/", refs, redact, list_dir)),
                "expensive": True})
    return out


def frame_scopes(v: Vertex, refs: References, redact: Redact) -> list[dict[str, Any]]:
    """A frame below the paused one (a step that led to it): its step only."""
    pairs = [("step", v.name), ("line", str(v.source.start_line) if v.source else ""), ("platform", platform_of(v))]
    return [{"name": "Step", "variablesReference": refs.add(_flat(pairs, redact)), "expensive": False}]


def entry_value(e: Entry) -> str:
    """`drwxr-xr-x 0 0 4096` (and ` -> target` for a symlink), as `ls -l` says it."""
    value = f"{stat.filemode(e.mode)} {e.uid} {e.gid} {e.size}"
    return value + (f" -> {shown(e.target)}" if e.target is not None else "")


def directory(path: str, refs: References, redact: Redact, list_dir: Callable[[str], list[Entry]]) -> Provider:
    """A directory's entries, listed when asked (paged with start/count; capped without)."""

    def provide(start: int, count: int | None) -> list[dict[str, Any]]:
        found = refs.listings.get(path)
        if found is None:
            found = refs.listings[path] = list_dir(path)
        end = len(found) if count else min(len(found), start + MAX_ENTRIES)
        if count:
            end = min(len(found), start + count)
        out = []
        for e in found[start:end]:
            child = posixpath.join(path, e.name)
            ref = refs.add(directory(child, refs, redact, list_dir)) if e.is_dir else 0
            out.append({"name": redact(shown(e.name)) + ("/" if e.is_dir else ""),
                        "value": redact(entry_value(e)), "variablesReference": ref,
                        "evaluateName": redact(shown(child))})
        if not count and end < len(found):
            out.append({"name": "…", "value": f"{len(found) - end} more entries not shown (ask with start/count)",
                        "variablesReference": 0})
        return out

    return provide
