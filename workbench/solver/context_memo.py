"""A build's side of the server's context memory (workbench.context_watch): ask whether a checksum of the
same copy of an unchanged context is known, and hand over the ones this build had to compute.

Without the build server (`WORKBENCH_SERVER=0`, the TUI, tests calling the solver) every checksum is a
walk, as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.llb.ops import Copy
from workbench.solver.fileops import Excluded

Walk = Callable[[Path, Copy, "Excluded | None"], tuple[str, dict[str, str], bool]]

_channel: Any = None  # a socket to the server, set in a build the server forked
_lock = threading.Lock()


def attach(channel: Any) -> None:
    """Use `channel` (the forked build's end of its socket pair with the server) for lookups."""
    global _channel
    _channel = channel


def signature(action: Copy, excluded: Excluded | None) -> str | None:
    """What besides the context decides a copy's checksum; None when that cannot be told (an exclusion
    given as arbitrary code)."""
    if excluded is None:
        patterns: tuple[tuple[str, bool], ...] = ()
    else:
        matcher = getattr(excluded, "__self__", None)
        raw = getattr(matcher, "patterns", None)
        if raw is None:
            return None
        patterns = tuple((p.text, p.exclusion) for p in raw)
    read = (action.src, action.follow_symlinks, action.allow_wildcard, action.allow_empty_wildcard,
            action.include_patterns, action.exclude_patterns, action.parents)
    return repr((read, patterns))


def _ask(message: dict[str, Any], reply: bool) -> dict[str, Any] | None:
    global _channel
    from workbench.wire import recv_message, send_message

    with _lock:
        if _channel is None:
            return None
        try:
            send_message(_channel, message)
            if not reply:
                return None
            answer, _ = recv_message(_channel)
        except (OSError, ValueError):
            answer = None
        if answer is None and reply:
            _channel = None  # the server is gone: walk from now on
        return answer


def checksum(context: Path, action: Copy, excluded: Excluded | None, walk: Walk) -> tuple[str, dict[str, str]]:
    """`walk`'s (checksum, files), or the server's copy of them when the context did not change since."""
    sig = signature(action, excluded) if _channel is not None else None
    if sig is None:
        digest, files, _ = walk(context, action, excluded)
        return digest, files
    root = os.path.realpath(context)
    try:
        st = os.stat(root)
    except OSError:
        st = None
    answer = None
    if st is not None:
        answer = _ask({"lookup": root, "ident": (st.st_dev, st.st_ino), "sig": sig}, reply=True)
    memo = answer.get("memo") if answer else None
    if memo is not None:
        return memo[0], memo[1]
    digest, files, linked = walk(context, action, excluded)
    generation = answer.get("gen") if answer else None
    if generation is not None and not linked:
        _ask({"store": root, "sig": sig, "gen": generation, "memo": (digest, files)}, reply=False)
    return digest, files
