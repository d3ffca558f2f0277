"""History retention stays exact (by count and by the age of `started`) while reading only what it must."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from workbench.history import store
from workbench.history.store import apply_retention, list_sessions


def _record(history: Path, name: str, age: float, finished: bool = True) -> Path:
    d = history / name
    d.mkdir(parents=True)
    (d / "events.jsonl").write_text("")
    (d / "meta.json").write_text(json.dumps({"id": name, "started": time.time() - age, "pid": 0}))
    if finished:
        (d / "result.json").write_text('{"status": "completed"}')
    return d


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files retention reads from now on (relative to their history folder)."""
    seen: list[str] = []
    real = store._read_json

    def read(path: Path) -> dict[str, Any] | None:
        seen.append(f"{path.parent.name}/{path.name}")
        return real(path)

    monkeypatch.setattr(store, "_read_json", read)
    return seen


def test_a_finish_reads_only_the_new_record_and_those_beyond_the_limits(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    history = tmp_path / "history"
    for i in range(20):
        _record(history, f"rec{i:02}", age=100 + i)  # rec19 the oldest
    assert apply_retention(history, max_entries=20, max_age=3600) == []
    _record(history, "new", age=0)
    reads = _reads(monkeypatch)
    assert apply_retention(history, keep="new", max_entries=50, max_age=3600) == []
    assert reads == ["history/.started.json", "new/meta.json"]
    reads.clear()
    # at the count limit: the oldest one goes, and it is the only other record read
    assert apply_retention(history, keep="new", max_entries=20, max_age=3600) == ["rec19"]
    assert sorted(reads) == ["history/.started.json", "new/meta.json", "rec19/meta.json", "rec19/result.json"]
    assert len(list_sessions(history)) == 20


def test_retention_with_the_index_is_exact_by_age_and_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = tmp_path / "history"
    for i in range(5):
        _record(history, f"rec{i}", age=10 * (i + 1))  # rec0 newest, rec4 50 s old
    _record(history, "running", age=500, finished=False)
    running = json.loads((history / "running" / "meta.json").read_text())
    (history / "running" / "meta.json").write_text(json.dumps({**running, "pid": __import__("os").getpid()}))
    assert apply_retention(history, max_entries=10, max_age=3600) == []  # the index now knows all six

    # time passes: rec4 (and the running build, which stays) grow older than the limit
    later = time.time() + 3600 - 45
    monkeypatch.setattr(store.time, "time", lambda: later)
    assert apply_retention(history, max_entries=10, max_age=3600) == ["rec4"]

    # a record imported under a known name, started long ago, is read again and goes
    shutil.rmtree(history / "rec3")
    _record(history, "rec3", age=10 * 86400)
    assert apply_retention(history, max_entries=10, max_age=3600) == ["rec3"]

    # over the count: the oldest finished ones go, the kept one and the running one stay
    for i in range(5, 9):
        _record(history, f"rec{i}", age=1)
    removed = apply_retention(history, keep="rec2", max_entries=4, max_age=3600)
    assert sorted(removed) == ["rec0", "rec1"]
    assert sorted(s.id for s in list_sessions(history)) == ["rec2", "rec5", "rec6", "rec7", "rec8", "running"]
