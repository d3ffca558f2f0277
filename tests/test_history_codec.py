"""The session event codec (every event kind round-trips, new kinds need no change), redaction, replay source."""

from __future__ import annotations

import collections.abc
import dataclasses
import io
import json
import types
import typing
from pathlib import Path

import pytest

from workbench.history import codec
from workbench.history.store import apply_retention, list_sessions, parse_duration, read_events
from workbench.progress import events as ev
from workbench.progress.plain import PlainPrinter
from workbench.progress.redact import MASK, RedactingBus, Redactor
from workbench.progress.replay import EventSource, replay_text

SRC = ev.SourceLocation("Dockerfile", 3, 4)
SAMPLES: list[ev.Event] = [
    ev.VertexStarted("sha256:a", "[1/2] RUN x", inputs=("sha256:b",), source=SRC, miss_reason="never built", ts=1.5),
    ev.VertexCached("sha256:b", "[2/2] COPY", inputs=(), source=None, cache_key="k", ts=2.0),
    ev.VertexLog("sha256:a", "[1/2] RUN x", stream=2, data=b"ok \xff\xfe binary\n", ts=2.25),
    ev.VertexLog("sha256:a", "[1/2] RUN x", data="héllo\n".encode(), ts=2.5),
    ev.VertexStatus("sha256:a", "[1/2] RUN x", status_id="extracting", current=5, total=10, done=True, ts=3.0),
    ev.VertexCompleted("sha256:a", "[1/2] RUN x", duration=1.25, ts=3.0),
    ev.VertexFailed("sha256:c", "RUN false", error="exit code: 1", duration=0.5, ts=3.5),
    ev.BuildWarning("JSON args recommended", source=SRC, rule="JSONArgsRecommended", detail=("a", "b"), ts=4.0),
    ev.DeviceGrant("sha256:a", "vendor.com/gpu=0", devices=("vendor.com/gpu=0",), granted=True,
                   how="auto-allow (annotation)", ts=4.5),
    ev.BuildFinished(error="boom", duration=3.0, ts=5.0),
]


def test_every_event_kind_round_trips_exactly() -> None:
    for e in SAMPLES:
        line = codec.dumps_event(e)
        assert "\n" not in line
        doc = json.loads(line)
        assert doc["type"] == type(e).__name__
        assert codec.loads_event(line) == e
    # every kind in events.py (including any added later) round-trips with a value in each of its fields
    for name, cls in codec.event_types().items():
        hints = typing.get_type_hints(cls)
        e = cls(**{f.name: _example(hints[f.name]) for f in dataclasses.fields(cls) if f.init})
        assert codec.loads_event(codec.dumps_event(e)) == e, name


def _example(hint: object) -> object:
    """A value of type `hint` that is not its default (so the round trip is tested for real)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _example(next(a for a in typing.get_args(hint) if a is not type(None)))
    if origin is tuple:
        return (_example(typing.get_args(hint)[0]),)
    if origin in (dict, collections.abc.Mapping):
        return {"k": "v", "n": [1, 2]}
    examples = {str: "x\u2028é", bytes: b"\x00\xffz", int: 7, float: 2.5, bool: True, ev.SourceLocation: SRC}
    return examples[hint]  # type: ignore[index]


def test_bytes_are_text_when_utf8_else_base64() -> None:
    text, binary = (codec.encode_event(e)["data"] for e in SAMPLES[3:1:-1])
    assert text == "héllo\n"
    assert binary == {"base64": "b2sg//4gYmluYXJ5Cg=="}


def test_a_new_event_kind_records_without_codec_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class BreakpointHit(ev.VertexEvent):
        line: int = 0
        locals: tuple[str, ...] = ()
        where: ev.SourceLocation | None = None
        snapshot: bytes = b""

    monkeypatch.setattr(ev, "BreakpointHit", BreakpointHit, raising=False)
    codec.event_types.cache_clear()
    try:
        hit = BreakpointHit("sha256:a", "RUN", line=7, locals=("A=1",), where=SRC, snapshot=b"\x00\x01", ts=9.0)
        assert codec.loads_event(codec.dumps_event(hit)) == hit
    finally:
        codec.event_types.cache_clear()


def test_unknown_and_torn_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = "".join(codec.dumps_event(e) + "\n" for e in SAMPLES[:3])
    path.write_text(good + '{"type":"FromTheFuture","ts":1}\n' + codec.dumps_event(SAMPLES[3])[:25])
    events, bad = read_events(path)
    assert events == SAMPLES[:3]
    assert bad == 2
    with pytest.raises(codec.CodecError, match="unknown event type"):
        codec.loads_event('{"type":"Nope"}')


def test_redaction_catches_values_split_across_chunks_and_in_every_field() -> None:
    secret = b"hunter2-very-secret"
    got: list[ev.Event] = []
    target = ev.EventBus()
    target.subscribe(got.append)
    bus = RedactingBus(target, Redactor([secret]))
    bus.emit(ev.VertexStarted("sha256:a", "RUN echo hunter2-very-secret", ts=1.0))
    for chunk in (b"token=hunter2-ve", b"ry-sec", b"ret\nnext hunter", b"2-very-secret tail\n", b"end hun"):
        bus.emit(ev.VertexLog("sha256:a", "RUN", data=chunk, ts=2.0))
    bus.emit(ev.VertexFailed("sha256:a", "RUN", error="failed: hunter2-very-secret", ts=3.0))
    blob = repr(got).encode() + b"".join(e.data for e in got if isinstance(e, ev.VertexLog))
    assert secret not in blob and b"hunter2-very-secret" not in blob
    logs = b"".join(e.data for e in got if isinstance(e, ev.VertexLog))
    assert logs == f"token={MASK}\nnext {MASK} tail\nend hun".encode()
    assert got[0].name == f"RUN echo {MASK}"  # type: ignore[attr-defined]
    assert isinstance(got[-1], ev.VertexFailed) and got[-1].error == f"failed: {MASK}"


def test_event_source_timing_seek_and_step() -> None:
    events = [ev.VertexLog("v", "n", data=b"%d\n" % i, ts=100.0 + i * 0.5) for i in range(5)]
    src = EventSource(events, speed=2.0)
    assert len(src) == 5 and src.duration == 2.0
    slept: list[float] = []
    assert list(src.play(sleep=slept.append)) == events
    assert slept == [0.25] * 4
    src.seek_time(1.0)
    assert src.position == 3 and src.played() == events[:3] and src.elapsed == 1.0
    assert src.step() is events[3]
    src.seek(0)
    assert src.step() is events[0]
    src.seek(99)
    assert src.at_end and src.step() is None


def test_plain_replay_depends_only_on_the_events() -> None:
    live = io.StringIO()
    printer = PlainPrinter(live)
    for e in SAMPLES:
        printer(e)
    replayed = io.StringIO()
    replay_text(SAMPLES, "plain", replayed)
    assert replayed.getvalue() == live.getvalue()
    assert "#1 CACHE MISS: never built" in live.getvalue()


def test_retention_by_count_and_age(tmp_path: Path) -> None:
    history = tmp_path / "history"
    for i, age in enumerate([10, 20, 30, 40, 3 * 86400]):
        d = history / f"rec{i}"
        d.mkdir(parents=True)
        (d / "events.jsonl").write_text("")
        (d / "meta.json").write_text(json.dumps({"id": f"rec{i}", "started": __import__("time").time() - age,
                                                 "pid": 0}))
        (d / "result.json").write_text('{"status": "completed"}')
    assert apply_retention(history, max_entries=50, max_age=86400) == ["rec4"]
    assert apply_retention(history, keep="rec3", max_entries=2, max_age=0) == ["rec2"]
    assert [s.id for s in list_sessions(history)] == ["rec0", "rec1", "rec3"]
    assert parse_duration("1h30m") == 5400 and parse_duration("48h") == 172800
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_replay_clips_step_logs_as_the_build_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.history.report import plain_output
    from workbench.history.store import load_session

    events = [ev.VertexStarted("v", "RUN noisy", ts=1.0),
              ev.VertexLog("v", "RUN noisy", data=b"x" * 50 + b"\n", ts=1.1),
              ev.VertexCompleted("v", "RUN noisy", duration=0.2, ts=1.2), ev.BuildFinished(duration=0.2, ts=1.3)]
    monkeypatch.setenv("BUILDKIT_STEP_LOG_MAX_SIZE", "20")
    live = io.StringIO()
    printer = PlainPrinter(live)
    for e in events:
        printer(e)
    assert "[output clipped, log limit 20B reached]" in live.getvalue()
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "events.jsonl").write_text("".join(codec.dumps_event(e) + "\n" for e in events))
    (folder / "meta.json").write_text(json.dumps({"id": "s", "step_log_max_size": "20"}))
    (folder / "result.json").write_text('{"status": "completed"}')
    monkeypatch.delenv("BUILDKIT_STEP_LOG_MAX_SIZE")
    assert plain_output(load_session(folder)) == live.getvalue()
