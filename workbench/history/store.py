"""The recorded sessions of a root (ROOT/history/<id>/): find, load, remove, and retention by count and age."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.history.codec import CodecError, loads_event
from workbench.progress.events import Event
from workbench.snapshot.scratch import pid_alive

DEFAULT_MAX_ENTRIES = 50
DEFAULT_MAX_AGE = 48 * 3600.0
"""BuildKit's history defaults (history.maxEntries 50, history.maxAge 48h)."""


class HistoryError(Exception):
    """A record that cannot be found or read; the message names it."""


@dataclass
class RecordedSession:
    """One recorded build: its folder, request, Dockerfile, events, LLB and result."""

    path: Path
    meta: dict[str, Any]
    result: dict[str, Any] | None
    dockerfile: str = ""
    events: list[Event] = field(default_factory=list)
    bad_lines: int = 0
    """Lines that could not be read back (a torn last line after a crash, an unknown event kind)."""

    @property
    def id(self) -> str:
        return str(self.meta.get("id") or self.path.name)

    @property
    def started(self) -> float:
        return float(self.meta.get("started") or 0.0)

    @property
    def status(self) -> str:
        """completed, error, canceled, running (its process is alive) or interrupted (killed, crashed)."""
        if self.result is not None:
            return str(self.result.get("status", "error"))
        pid = int(self.meta.get("pid") or 0)
        if pid and pid_alive(pid) and time.time() - self.started < 24 * 3600:
            return "running"
        return "interrupted"

    def llb(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in (self.path / "llb.jsonl").read_text().splitlines() if line]
        except (OSError, ValueError):
            return []



def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_events(path: Path) -> tuple[list[Event], int]:
    """The events of an events.jsonl, and how many lines could not be read (skipped)."""
    events: list[Event] = []
    bad = 0
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise HistoryError(f"{path}: cannot read: {e.strerror}") from None
    for line in raw.decode("utf-8", "surrogateescape").splitlines():
        if not line.strip():
            continue
        try:
            events.append(loads_event(line))
        except CodecError:
            bad += 1
    return events, bad


def session_folder(path: Path) -> Path:
    """The session folder of PATH: the folder itself, or its `session/` (a curated example in sessions/)."""
    if (path / "events.jsonl").is_file():
        return path
    if (path / "session" / "events.jsonl").is_file():
        return path / "session"
    raise HistoryError(f"{path}: not a recorded session (no events.jsonl)")


def load_session(path: Path, with_events: bool = True) -> RecordedSession:
    """Read the session in folder `path` (or an exported .tar/.tar.gz of one)."""
    if path.is_file() and tarfile.is_tarfile(path):
        path = _unpack(path)
    folder = session_folder(path)
    meta = _read_json(folder / "meta.json") or {"id": folder.name}
    result = _read_json(folder / "result.json")
    dockerfile = ""
    if with_events:  # listing many records needs neither
        try:
            dockerfile = (folder / "Dockerfile").read_text(errors="replace")
        except OSError:
            pass
    events, bad = read_events(folder / "events.jsonl") if with_events else ([], 0)
    return RecordedSession(folder, meta, result, dockerfile, events, bad)


def _unpack(archive: Path) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="workbench-session-"))
    atexit.register(shutil.rmtree, dest, True)  # the unpacked copy lives as long as this process needs it
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    entries = [p for p in dest.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def list_sessions(history: Path) -> list[RecordedSession]:
    """Every record under `history`, newest first (events not loaded)."""
    found = []
    try:
        entries = list(os.scandir(history))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith(".") and os.path.exists(os.path.join(entry.path,
                                                                                          "events.jsonl")):
            found.append(load_session(Path(entry.path), with_events=False))
    found.sort(key=lambda s: s.started, reverse=True)
    return found


def resolve(history: Path, ref: str) -> Path:
    """A record by id, unique id prefix, `^N` (the Nth before the newest; `^0` is the newest) or a path."""
    m = re.fullmatch(r"\^(\d+)", ref)
    if m:
        records = list_sessions(history)
        n = int(m.group(1))
        if n >= len(records):
            raise HistoryError(f"{ref}: there are only {len(records)} records in {history}")
        return records[n].path
    if (history / ref / "events.jsonl").is_file():
        return history / ref
    if "/" not in ref:
        matches = [s.path for s in list_sessions(history) if s.path.name.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise HistoryError(f"{ref}: ambiguous, matches {len(matches)} records")
    path = Path(ref)
    if path.exists():
        return path
    raise HistoryError(f"no build record {ref!r} in {history}")


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `48h`, `7d` (or combined, `1h30m`) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration (e.g. 30m, 48h, 7d)")
    return sum(float(n) * units[u] for n, u in parts)


def retention_policy() -> tuple[int, float]:
    """(max entries, max age in seconds) from $WORKBENCH_HISTORY_MAX_ENTRIES and $WORKBENCH_HISTORY_MAX_AGE."""
    entries, age = DEFAULT_MAX_ENTRIES, DEFAULT_MAX_AGE
    if v := os.environ.get("WORKBENCH_HISTORY_MAX_ENTRIES"):
        try:
            entries = int(v)
        except ValueError:
            pass
    if v := os.environ.get("WORKBENCH_HISTORY_MAX_AGE"):
        try:
            age = parse_duration(v)
        except ValueError:
            pass
    return entries, age


def apply_retention(history: Path, keep: str = "", max_entries: int | None = None,
                    max_age: float | None = None) -> list[str]:
    """Remove finished records beyond the newest `max_entries` or older than `max_age`; returns their ids.

    Records of builds still running and the record `keep` (the build that just finished) stay. Only the records
    beyond either limit are read: the count comes from the folder's listing, each record's start time from the
    index STARTED_INDEX (a record not in it: from its meta.json).
    """
    entries, age = retention_policy()
    entries = entries if max_entries is None else max_entries
    age = age if max_age is None else max_age
    if entries < 0 and age <= 0:
        return []
    now = time.time()
    try:
        folders = {e.name: _identity(e) for e in os.scandir(history) if not e.name.startswith(".") and e.is_dir()}
    except FileNotFoundError:
        return []
    if age <= 0 and len(folders) <= entries:
        return []
    index = _StartedIndex(history, folders)
    started = index.started
    if not (entries >= 0 and len(folders) > entries) and all(now - t <= age for t in started.values()):
        index.save()
        return []
    # as list_sessions ranks them: newest first, the folders that hold a record
    ranked = sorted((n for n in folders if os.path.exists(os.path.join(history, n, "events.jsonl"))),
                    key=started.__getitem__, reverse=True)
    removed = []
    for n, name in enumerate(ranked):
        if name == keep or not ((entries >= 0 and n >= entries) or (age > 0 and now - started[name] > age)):
            continue
        if load_session(history / name, with_events=False).status == "running":
            continue
        remove(history / name)
        removed.append(name)
    index.save(removed)
    return removed


INDEX_SLACK = 8  # records read from their meta.json before the index is written again (a write costs more)
STARTED_INDEX = ".started.json"
"""history/.started.json: {record folder: [its meta's `started`, the folder's inode and ctime]}, what retention
reads instead of every meta.json (a record's start never changes; a folder not in it, or changed since, is read
again; one gone is dropped)."""


def _identity(entry: os.DirEntry[str]) -> tuple[int, int]:
    """A folder as the index knows it: another folder of that name (removed and made again) is another one."""
    try:
        return entry.inode(), entry.stat(follow_symlinks=False).st_ctime_ns
    except FileNotFoundError:
        return entry.inode(), 0


class _StartedIndex:
    """The start time of each record folder in `folders` (name: identity), from STARTED_INDEX or, for a folder
    it does not know, from its meta.json (as RecordedSession.started: 0.0 for a meta without one, or not written
    yet; such a one is not kept in the index)."""

    def __init__(self, history: Path, folders: dict[str, tuple[int, int]]) -> None:
        self.history = history
        index = _read_json(history / STARTED_INDEX) or {}
        self.started: dict[str, float] = {}
        self.entries: dict[str, list[int | float]] = {}
        self.unindexed = 0
        for name, ident in folders.items():
            entry = index.get(name)
            if (isinstance(entry, list) and len(entry) == 3 and tuple(entry[1:]) == ident
                    and isinstance(entry[0], (int, float)) and entry[0] > 0):
                value = float(entry[0])
            else:
                meta = _read_json(history / name / "meta.json") or {}
                try:
                    value = float(meta.get("started") or 0.0)
                except (TypeError, ValueError):
                    value = 0.0
                self.unindexed += 1
            self.started[name] = value
            if value > 0:
                self.entries[name] = [value, *ident]

    def save(self, removed: Sequence[str] = ()) -> None:
        """Writes the index when records went, or enough were read from their meta.json."""
        if not removed and self.unindexed < INDEX_SLACK:
            return
        for name in removed:
            self.entries.pop(name, None)
        from workbench.state_root import write_private

        try:
            write_private(self.history / STARTED_INDEX, json.dumps(self.entries, separators=(",", ":")))
        except OSError:
            pass  # only a cache: the next retention reads the metas again
