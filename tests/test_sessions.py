"""The curated sessions in sessions/: each replays to exactly the plain output its build printed, and each
shows what its README says it shows (re-record them with scripts/record-sessions.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from workbench.history.report import plain_output
from workbench.history.steps import fold
from workbench.history.store import load_session

SESSIONS = Path(__file__).resolve().parent.parent / "sessions"
EXAMPLES = sorted(p for p in SESSIONS.iterdir() if p.is_dir())
RECORDED = sorted(p.parent for p in SESSIONS.rglob("events.jsonl"))


def test_at_least_five_curated_examples_with_dockerfile_readme_and_session() -> None:
    assert len(EXAMPLES) >= 5
    for ex in EXAMPLES:
        assert (ex / "Dockerfile").is_file() and (ex / "README.md").is_file(), ex
        assert (ex / "session" / "events.jsonl").is_file(), ex
        assert (ex / "session" / "plain.txt").is_file(), ex


@pytest.mark.parametrize("folder", RECORDED, ids=lambda p: str(p.relative_to(SESSIONS)))
def test_replay_reproduces_the_recorded_plain_output(folder: Path) -> None:
    s = load_session(folder)
    assert s.bad_lines == 0 and s.status in ("completed", "error")
    assert plain_output(s) == (folder / "plain.txt").read_text()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_cli_replay_of_each_example(example: Path) -> None:
    proc = subprocess.run(WORKBENCH + ["replay", str(example), "--progress", "plain"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (example / "session" / "plain.txt").read_text()


def _steps(folder: Path) -> dict[str, object]:
    return {st.name: st for st in fold(load_session(folder).events).steps}


def test_cache_miss_copy_session_shows_the_miss_and_the_fix() -> None:
    bad = _steps(SESSIONS / "cache-miss-copy" / "session")
    copy = bad["[3/5] COPY . /app"]
    assert copy.state == "done" and "src/app.sh changed" in copy.miss_reason  # type: ignore[attr-defined]
    install = next(s for n, s in bad.items() if n.startswith("[4/5] RUN"))
    assert install.state == "done" and install.duration > 1.5  # type: ignore[attr-defined]
    good = _steps(SESSIONS / "cache-miss-copy" / "restructured-session")
    assert next(s for n, s in good.items() if n.startswith("[4/6] RUN")).state == "cached"  # type: ignore[attr-defined]
    assert "src/app.sh changed" in good["[5/6] COPY src/ /app/src/"].miss_reason  # type: ignore[attr-defined]


def test_multi_stage_session_ran_the_stages_in_parallel() -> None:
    steps = fold(load_session(SESSIONS / "multi-stage-parallel" / "session").events).steps
    runs = [s for s in steps if any(k in s.name for k in ("frontend:", "backend:", "docs:"))]
    assert len(runs) == 3
    assert max(s.started for s in runs) < min(s.completed for s in runs)  # type: ignore[operator,type-var]


def test_cache_mount_session_reuses_the_downloads() -> None:
    first = (SESSIONS / "cache-mount" / "first-build-session" / "plain.txt").read_text()
    second = (SESSIONS / "cache-mount" / "session" / "plain.txt").read_text()
    def said(text: str, what: str) -> int:  # log lines only (the step's name holds the words too)
        return len(re.findall(rf"^#5 [0-9.]+ \w+: {what}$", text, re.M))

    assert said(first, "downloading...") == 3 and said(first, "cached download") == 0
    assert said(second, "cached download") == 3 and said(second, "downloading...") == 0
    assert "build arg APP_VERSION changed" in second


def test_secret_session_shows_the_mask_only() -> None:
    folder = SESSIONS / "secret-mount" / "session"
    plain = (folder / "plain.txt").read_text()
    assert "oops, printing it: ****\n" in plain
    assert "tok-" not in "".join(p.read_text(errors="replace") for p in folder.iterdir())


def test_device_sessions_record_the_grant_and_the_denial() -> None:
    from workbench.progress.events import DeviceGrant

    granted = [e for e in load_session(SESSIONS / "devices" / "session").events if isinstance(e, DeviceGrant)]
    assert [(g.request, g.granted, g.how) for g in granted] == [("example.com/gpu=gpu0", True,
                                                                 "auto-allow (annotation)")]
    denied = load_session(SESSIONS / "devices" / "denied-session")
    grants = [e for e in denied.events if isinstance(e, DeviceGrant)]
    assert len(grants) == 1 and not grants[0].granted and "--allow device=example.com/licensed" in grants[0].how
    assert denied.status == "error" and "not allowed" in (denied.result or {})["error"]


def _dap_messages(folder: Path) -> list[tuple[float, str, dict[str, object]]]:
    out = []
    for n, line in enumerate((folder / "dap.jsonl").read_text().splitlines(), 1):
        record = json.loads(line)
        assert set(record) == {"t", "from", "message"}, f"dap.jsonl:{n}: {sorted(record)}"
        assert record["from"] in ("client", "adapter") and isinstance(record["message"], dict), f"dap.jsonl:{n}"
        out.append((record["t"], record["from"], record["message"]))
    return out


def test_dap_session_answers_every_request_stops_at_the_breakpoint_and_ends() -> None:
    folder = SESSIONS / "dap-breakpoint" / "session"
    messages = _dap_messages(folder)
    times = [t for t, _, _ in messages]
    assert times == sorted(times) and times[0] >= 0
    requests = {m["seq"]: m["command"] for _, side, m in messages if side == "client"}
    assert all(m["type"] == "request" for _, side, m in messages if side == "client")
    responses = [m for _, side, m in messages if side == "adapter" and m["type"] == "response"]
    assert sorted(r["request_seq"] for r in responses) == sorted(requests)  # every request answered, once
    assert all(r["success"] and r["command"] == requests[r["request_seq"]] for r in responses)
    adapter_seqs = [m["seq"] for _, side, m in messages if side == "adapter"]
    assert adapter_seqs == list(range(1, len(adapter_seqs) + 1))
    events = [m for _, side, m in messages if side == "adapter" and m["type"] == "event"]
    line = next(b["line"] for _, side, m in messages if side == "client" and m["command"] == "setBreakpoints"
                for b in m["arguments"]["breakpoints"])  # type: ignore[index]
    stopped = [e["body"] for e in events if e["event"] == "stopped"]
    assert [s["reason"] for s in stopped] == ["breakpoint"]  # type: ignore[index]
    trace = next(r for r in responses if r["command"] == "stackTrace")
    assert trace["body"]["stackFrames"][0]["line"] == line  # type: ignore[index]
    evaluated = next(r for r in responses if r["command"] == "evaluate")
    assert evaluated["body"]["result"] == "hello from /src\nworld\n"  # type: ignore[index]
    assert events[-1]["event"] == "terminated" and events[-2]["event"] == "exited"
    assert "/tmp" not in "".join(p.read_text() for p in folder.iterdir())  # paths as they are in the tree


def test_dap_session_replays_its_pause() -> None:
    from workbench.progress.events import DebugPaused, DebugResumed

    s = load_session(SESSIONS / "dap-breakpoint" / "session")
    paused = [e for e in s.events if isinstance(e, DebugPaused)]
    resumed = [e for e in s.events if isinstance(e, DebugResumed)]
    assert [(e.reason, e.source.start_line if e.source else 0) for e in paused] == [("breakpoint", 5)]
    assert [e.how for e in resumed] == ["continue"]
    assert re.search(r"^#\d+ DONE [0-9.]+s \(paused [0-9.]+s\)$", plain_output(s), re.M)
