"""A step's earlier runs, from the recorded sessions of a root (ROOT/history): the output of its last run (by
cache key), and the op a vertex ran (its env, workdir and user) as the build graph recorded it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.history.steps import fold
from workbench.history.store import list_sessions, read_events
from workbench.progress.trace import DONE
from workbench.results import ShellConfig


@dataclass(frozen=True)
class LastRun:
    """The last recorded run of a step: the build (session id) it ran in, when, and its output lines."""

    build: str
    started: float
    step: str
    lines: tuple[str, ...]

    def label(self) -> str:
        """`from build <id> at <time>`: where the lines come from."""
        return f"from build {self.build} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}"


def _history(root: Path) -> Path:
    from workbench.history.recorder import history_dir

    return history_dir(root)


def last_run(root: Path, cache_key: str) -> LastRun | None:
    """The newest recorded build in which the step with `cache_key` ran (not came from the cache), with its
    output; None when no record has it (pruned by the retention, or recording was off)."""
    needle = cache_key.encode()
    for session in list_sessions(_history(root)):  # newest first
        path = session.path / "events.jsonl"
        try:
            if needle not in path.read_bytes():  # most records never mention the key: skip the parse
                continue
            events, _ = read_events(path)
        except Exception:  # a record being written or damaged: the next one may have it
            continue
        for step in fold(events).steps:
            if step.cache_key == cache_key and step.state == DONE:
                text = step.log_text().decode("utf-8", "replace")
                lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
                if lines and lines[-1] == "":
                    lines.pop()
                return LastRun(session.id, session.started, step.name, tuple(lines))
    return None


def recorded_graph(root: Path, digest: str) -> dict[str, dict[str, Any]]:
    """The ops (by digest, as `workbench inspect llb` prints them) of the newest recorded build whose graph has
    the vertex `digest`; empty when none has."""
    needle = digest.encode()
    for session in list_sessions(_history(root)):
        try:
            raw = (session.path / "llb.jsonl").read_bytes()
        except OSError:
            continue
        if needle not in raw:
            continue
        ops: dict[str, dict[str, Any]] = {}
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("digest"), str):
                ops[record["digest"]] = record
        if digest in ops:
            return ops
    return {}


def shell_config(root: Path, digest: str) -> tuple[ShellConfig, str]:
    """The env, workdir and user for a shell in vertex `digest`'s result, and where they come from: the step's
    own RUN, else the first RUN built on it (the image config as the next command saw it), else defaults."""
    ops = recorded_graph(root, digest)
    record = ops.get(digest)
    if record is None:
        return ShellConfig(), "defaults (the step is not in the recorded builds)"
    if record.get("op") == "ExecOp":
        return _exec_config(record), "its own RUN"
    # the first RUN above it on the same filesystem (input 0), breadth first
    frontier, seen = [digest], {digest}
    while frontier:
        following = []
        for d in frontier:
            for other in ops.values():
                inputs = other.get("inputs") or []
                if inputs and inputs[0] == d and other["digest"] not in seen:
                    if other.get("op") == "ExecOp":
                        return _exec_config(other), f"the RUN after it ({other.get('name', '')})"
                    seen.add(other["digest"])
                    following.append(other["digest"])
        frontier = following
    return ShellConfig(), "defaults (no RUN follows it)"


def _exec_config(record: dict[str, Any]) -> ShellConfig:
    fields = record.get("fields") or {}
    env = tuple(str(e) for e in fields.get("env") or ())
    return ShellConfig(env, str(fields.get("cwd") or "/"), str(fields.get("user") or ""))
