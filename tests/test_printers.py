"""The progress views: exact text of plain and tty (BuildKit's progressui), SolveStatus JSON of rawjson."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wb
from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexFailed,
    VertexLog,
    VertexStarted,
    VertexStatus,
)
from workbench.progress.logclip import LogClipper
from workbench.progress.plain import PlainPrinter
from workbench.progress.printers import make_printer
from workbench.progress.rawjson import RawJsonPrinter
from workbench.progress.tty import TtyPrinter
from workbench.progress.units import format_binary_size, format_bytes, rfc3339

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
RUN = "[2/3] RUN echo hi"


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(printer: object, events: list[Event]) -> None:
    for ev in events:
        printer(ev)  # type: ignore[operator]


def build_events() -> list[Event]:
    """A cached base, a RUN with output and a layer status, a failing RUN, a warning, the end."""
    return [
        VertexCached("d1", "[1/3] FROM localhost:5055/busybox", cache_key="sha256:k1", ts=100.0),
        VertexStarted("d2", RUN, inputs=("d1",), miss_reason="the instruction changed",
                      source=SourceLocation("Dockerfile", 2, 2), ts=100.0),
        VertexLog("d2", RUN, data=b"hi\npart", ts=100.5),
        VertexStatus("d2", RUN, status_id="sha256:abc", current=0, total=3_400_000, ts=100.6),
        VertexStatus("d2", RUN, status_id="sha256:abc", current=100_000, total=3_400_000, ts=100.7),
        VertexStatus("d2", RUN, status_id="sha256:abc", current=1_200_000, total=3_400_000, ts=100.8),
        VertexLog("d2", RUN, data=b"ial\n", ts=100.9),
        VertexStatus("d2", RUN, status_id="sha256:abc", current=3_400_000, total=3_400_000, done=True, ts=101.0),
        VertexCompleted("d2", RUN, duration=1.21, ts=101.21),
        VertexStarted("d3", "[3/3] RUN exit 3", inputs=("d2",), ts=101.3),
        VertexLog("d3", "[3/3] RUN exit 3", stream=2, data=b"oops\n", ts=101.4),
        VertexFailed("d3", "[3/3] RUN exit 3", error="exit code: 3", duration=0.2, ts=101.5),
        BuildWarning("JSONArgsRecommended: JSON arguments recommended (line 4)", SourceLocation("Dockerfile", 4, 4),
                     rule="JSONArgsRecommended", url="https://docs.docker.com/go/dockerfile/rule/x/",
                     detail=("JSON arguments are recommended",), ts=101.6),
        BuildFinished(error="exit code: 3", duration=1.7, ts=101.7),
    ]


# -- formatting ----------------------------------------------------------------------------------------------------


def test_byte_and_time_formats_are_gos() -> None:
    assert [format_bytes(n) for n in (0, 2, 999, 1000, 3_350_000, 113_260_000)] == [
        "0B", "2B", "999B", "1.00kB", "3.35MB", "113.26MB"]
    assert [format_binary_size(n) for n in (2 * 1024 * 1024, 200 * 1024, 100)] == ["2MiB", "200KiB", "100B"]
    assert rfc3339(1700000000.0) == "2023-11-14T22:13:20Z"
    assert rfc3339(1700000000.5) == "2023-11-14T22:13:20.5Z"
    assert rfc3339(1700000000.123456) == "2023-11-14T22:13:20.123456Z"


def test_log_clipper_clips_each_stream_once_with_buildkits_message() -> None:
    clip = LogClipper(limit=8)
    assert clip("v", 1, b"12345") == b"12345"
    assert clip("v", 1, b"67890") == b"678\n[output clipped, log limit 8B reached]\n"
    assert clip("v", 1, b"more") == b""
    assert clip("v", 2, b"stderr!") == b"stderr!"
    assert LogClipper(limit=-1)("v", 1, b"x" * 100) == b"x" * 100


# -- plain ---------------------------------------------------------------------------------------------------------


def test_plain_matches_buildkit_shape() -> None:
    out = io.StringIO()
    p = PlainPrinter(out)
    p(VertexCached("d1", "[1/3] FROM localhost:5055/busybox"))
    p(VertexStarted("d2", "[2/3] RUN echo hi", miss_reason="the instruction changed", ts=100.0))
    p(VertexLog("d2", "[2/3] RUN echo hi", data=b"hi\npart", ts=100.5))
    p(VertexCompleted("d2", "[2/3] RUN echo hi", duration=0.31))
    p(VertexStarted("d3", "[3/3] RUN exit 3", ts=101.0))
    p(VertexFailed("d3", "[3/3] RUN exit 3", error="exit code: 3"))
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["#1 [1/3] FROM localhost:5055/busybox", "#1 CACHED"]
    assert "#2 [2/3] RUN echo hi" in lines
    assert "#2 CACHE MISS: the instruction changed" in lines
    assert "#2 0.500 hi" in lines
    # BuildKit stamps an unterminated last line with the time of its first bytes, like any other line.
    assert "#2 0.500 part" in lines
    assert "#2 DONE 0.3s" in lines
    assert "#3 ERROR: exit code: 3" in lines


def test_plain_whole_build_text() -> None:
    out = io.StringIO()
    drive(PlainPrinter(out), build_events())
    assert out.getvalue() == """\
#1 [1/3] FROM localhost:5055/busybox
#1 CACHED

#2 [2/3] RUN echo hi
#2 CACHE MISS: the instruction changed
#2 0.500 hi
#2 sha256:abc 0B / 3.40MB
#2 sha256:abc 1.20MB / 3.40MB 0.2s
#2 0.500 partial
#2 sha256:abc 3.40MB / 3.40MB 0.4s done
#2 DONE 1.2s

#3 [3/3] RUN exit 3
#3 0.100 oops
#3 ERROR: exit code: 3
------
 > [3/3] RUN exit 3:
0.100 oops
------

 1 warning found:
 - JSONArgsRecommended: JSON arguments recommended (line 4)
"""


def test_plain_interleaved_steps_mark_the_interruption() -> None:
    out = io.StringIO()
    drive(PlainPrinter(out), [
        VertexStarted("a", "[a 2/2] RUN one", ts=10.0),
        VertexLog("a", "[a 2/2] RUN one", data=b"a1\n", ts=10.25),
        VertexStarted("b", "[b 2/2] RUN two", ts=10.5),
        VertexLog("b", "[b 2/2] RUN two", data=b"b1\n", ts=10.75),
        VertexLog("a", "[a 2/2] RUN one", data=b"a2\n", ts=12.0),
        VertexCompleted("a", "[a 2/2] RUN one", duration=2.5),
        VertexCompleted("b", "[b 2/2] RUN two", duration=2.0),
    ])
    assert out.getvalue().split("\n\n") == [
        "#1 [a 2/2] RUN one\n#1 0.250 a1\n#1 ...",
        "#2 [b 2/2] RUN two\n#2 0.250 b1\n#2 ...",
        "#1 [a 2/2] RUN one\n#1 2.000 a2\n#1 DONE 2.5s",
        "#2 [b 2/2] RUN two\n#2 DONE 2.0s\n",
    ]


def test_plain_log_stamp_precision_and_streams_kept_apart() -> None:
    out = io.StringIO()
    drive(PlainPrinter(out), [
        VertexStarted("a", "s", ts=0.0),
        VertexLog("a", "s", stream=1, data=b"out-", ts=12.345),
        VertexLog("a", "s", stream=2, data=b"err\n", ts=12.5),
        VertexLog("a", "s", stream=1, data=b"end\nlate\n", ts=123.45),
        VertexCompleted("a", "s", duration=124.0),
    ])
    assert out.getvalue().splitlines()[1:] == ["#1 12.50 err", "#1 12.35 out-end", "#1 123.5 late", "#1 DONE 124.0s"]


def test_plain_clips_a_steps_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDKIT_STEP_LOG_MAX_SIZE", "10")
    out = io.StringIO()
    drive(PlainPrinter(out), [
        VertexStarted("a", "s", ts=0.0),
        VertexLog("a", "s", data=b"0123456\n0123456\n", ts=0.5),
        VertexLog("a", "s", data=b"dropped\n", ts=0.6),
        VertexCompleted("a", "s", duration=1.0),
    ])
    assert out.getvalue().splitlines()[1:] == [
        "#1 0.500 0123456", "#1 0.500 01", "#1 0.500 [output clipped, log limit 10B reached]", "#1 DONE 1.0s"]


def test_plain_cancellation() -> None:
    out = io.StringIO()
    drive(PlainPrinter(out), [
        VertexStarted("a", "[1/2] RUN sleep 9", ts=0.0),
        VertexStarted("b", "[x 1/1] RUN false", ts=0.0),
        VertexFailed("b", "[x 1/1] RUN false", error="exit code: 1", duration=0.1),
        VertexStarted("c", "[2/2] RUN never", ts=0.2),
        VertexFailed("c", "[2/2] RUN never", error="canceled", duration=0.0),
        BuildFinished(error="exit code: 1", ts=1.0),
    ])
    text = out.getvalue()
    assert "#3 CANCELED\n" in text and "\n#1 [1/2] RUN sleep 9\n#1 CANCELED\n" in text
    assert text.count("------\n > ") == 1 and " > [x 1/1] RUN false:\n------\n" in text


def test_plain_status_without_total_and_a_completed_status_seen_once() -> None:
    out = io.StringIO()
    drive(PlainPrinter(out), [
        VertexStarted("a", "[internal] load remote file", ts=0.0),
        VertexStatus("a", "x", status_id="fetching repo", ts=0.0),
        VertexStatus("a", "x", status_id="fetching repo", done=True, ts=0.4),
        VertexStatus("a", "x", status_id="downloading", current=2048, done=True, ts=0.5),
    ])
    assert out.getvalue().splitlines()[1:] == [
        "#1 fetching repo", "#1 fetching repo 0.4s done", "#1 downloading 2.05kB done"]


# -- tty -----------------------------------------------------------------------------------------------------------


def tty(width: int = 72, height: int = 20, now: float = 0.0) -> tuple[TtyPrinter, FakeTty, list[float]]:
    out = FakeTty()
    clock = [now]
    return TtyPrinter(out, width=width, height=height, live=False, clock=lambda: clock[0]), out, clock


def frames(text: str) -> list[list[str]]:
    """Each frame (between hide-cursor and show-cursor) as its visible lines."""
    return [ANSI.sub("", f.split("\x1b[?25h")[0]).splitlines() for f in text.split("\x1b[?25l")[1:]]


def test_tty_final_frame_error_logs_and_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    p, out, _ = tty(now=1000.0)
    drive(p, build_events())
    final = frames(out.getvalue())[-1]
    assert [line.rstrip() for line in final] == [
        "[+] Building 1.7s (3/3) FINISHED",
        " => CACHED [1/3] FROM localhost:5055/busybox                       0.0s",
        " => [2/3] RUN echo hi                                              1.2s",
        " => => sha256:abc 3.40MB / 3.40MB                                  0.4s",
        " => ERROR [3/3] RUN exit 3                                         0.2s",
    ]
    assert all(len(line) == 71 for line in final[1:]) and len(final[0]) == 72
    text = out.getvalue()
    assert "\x1b[31m => ERROR [3/3] RUN exit 3" in text and "\x1b[34m => CACHED [1/3]" in text
    tail = ANSI.sub("", text.rsplit("\x1b[?25h", 1)[1])
    assert tail == ("------\n > [3/3] RUN exit 3:\n0.100 oops\n------\n\n 1 warning found:\n"
                    " - JSONArgsRecommended: JSON arguments recommended (line 4)\n")


def test_tty_live_frame_shows_timers_progress_and_log_tail() -> None:
    p, out, clock = tty(width=60, height=24, now=100.0)
    drive(p, [
        VertexCached("d1", "[1/2] FROM localhost:5055/busybox", ts=100.0),
        VertexStarted("d2", "[2/2] RUN make", ts=100.0),
        VertexStatus("d2", "[2/2] RUN make", status_id="sha256:0123456789ab", current=1_200_000,
                     total=3_400_000, ts=100.5),
        VertexLog("d2", "[2/2] RUN make", data=b"".join(b"line %d\n" % i for i in range(1, 9)), ts=101.0),
        VertexLog("d2", "[2/2] RUN make", data=b"50%\r75%", ts=101.1),
    ])
    clock[0] = 103.25
    p.render()
    frame = [line.rstrip() for line in frames(out.getvalue())[-1]]
    assert frame == [
        "[+] Building 3.2s (1/2)",
        " => CACHED [1/2] FROM localhost:5055/busybox           0.0s",
        " => [2/2] RUN make                                     3.2s",
        " => => # line 4", " => => # line 5", " => => # line 6", " => => # line 7", " => => # line 8",
        " => => # 75%",
        " => => sha256:0123456789ab 1.20MB / 3.40MB             2.8s",
    ]
    # Each frame first moves up over the previous one (its lines + 1) to redraw it in place.
    assert f"\x1b[{len(frames(out.getvalue())[-2])}A" in out.getvalue().split("\x1b[?25l")[-2]


def test_tty_fits_narrow_and_short_terminals() -> None:
    p, out, clock = tty(width=40, height=6, now=0.0)
    steps = [f"[{i}/9] RUN a-rather-long-command-number-{i}" for i in range(1, 9)]
    for i, name in enumerate(steps):
        p(VertexStarted(str(i), name, ts=0.0))
        if i != 2:
            p(VertexCompleted(str(i), name, duration=0.5, ts=0.5))
    clock[0] = 1.0
    p.render()
    frame = frames(out.getvalue())[-1]
    assert all(len(line) <= 40 for line in frame)
    assert len(frame) == 5  # the header and height - 2 jobs, the running one kept in view
    assert frame[1] == " => [3/9] RUN a-rather-long-comma  1.0s"


def test_tty_redraws_from_a_thread_until_the_build_ends() -> None:
    out = FakeTty()
    p = TtyPrinter(out, width=60, height=10, interval=0.01)
    p(VertexStarted("a", "[1/1] RUN sleep 1"))
    time.sleep(0.2)
    assert p.thread is not None and p.thread.is_alive()
    assert out.getvalue().count("\x1b[?25l") >= 3
    p(VertexCompleted("a", "[1/1] RUN sleep 1", duration=0.2))
    p(BuildFinished(duration=0.2))
    p.thread.join(1)
    assert not p.thread.is_alive()
    assert "FINISHED" in frames(out.getvalue())[-1][0]
    before = out.getvalue()
    p(VertexStarted("late", "x"))
    assert out.getvalue() == before


def test_auto_is_tty_only_on_a_terminal() -> None:
    assert isinstance(make_printer("auto", FakeTty()), TtyPrinter)
    assert isinstance(make_printer("auto", io.StringIO()), PlainPrinter)
    assert isinstance(make_printer("rawjson", io.StringIO()), RawJsonPrinter)
    with pytest.raises(ValueError):
        make_printer("fancy", io.StringIO())


# -- rawjson -------------------------------------------------------------------------------------------------------


def rawjson(events: list[Event]) -> list[dict[str, Any]]:
    out = io.StringIO()
    drive(RawJsonPrinter(out), events)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events)
    return [json.loads(line) for line in lines]


def test_rawjson_is_one_solve_status_per_event() -> None:
    out = io.StringIO()
    RawJsonPrinter(out)(VertexLog("d", "n", stream=2, data=b"x", ts=1700000000.25))
    expected = '{"logs":[{"vertex":"d","stream":2,"data":"eA==","timestamp":"2023-11-14T22:13:20.25Z"}]}\n'
    assert out.getvalue() == expected


def test_rawjson_objects_have_buildkits_keys() -> None:
    docs = rawjson(build_events())
    assert docs[0] == {"vertexes": [{"digest": "d1", "name": "[1/3] FROM localhost:5055/busybox",
                                     "started": rfc3339(100.0), "completed": rfc3339(100.0), "cached": True,
                                     "workbench": {"cache_key": "sha256:k1"}}]}
    assert docs[1] == {"vertexes": [{"digest": "d2", "inputs": ["d1"], "name": RUN, "started": rfc3339(100.0),
                                     "workbench": {"miss_reason": "the instruction changed", "source": {
                                         "filename": "Dockerfile", "start_line": 2, "end_line": 2}}}]}
    assert docs[3] == {"statuses": [{"id": "sha256:abc", "vertex": "d2", "total": 3400000, "current": 0,
                                     "timestamp": rfc3339(100.6), "started": rfc3339(100.6)}]}
    assert docs[7]["statuses"][0]["completed"] == rfc3339(101.0)
    done = docs[8]["vertexes"][0]
    assert list(done) == ["digest", "inputs", "name", "started", "completed", "workbench"]
    assert done["completed"] == rfc3339(101.21) and done["workbench"]["duration"] == 1.21
    assert docs[11]["vertexes"][0]["error"] == "exit code: 3"
    warning = docs[12]["warnings"][0]
    assert base64.b64decode(warning.pop("short")).decode().startswith("JSONArgsRecommended: ")
    assert warning == {"level": 1, "detail": [base64.b64encode(b"JSON arguments are recommended").decode()],
                       "url": "https://docs.docker.com/go/dockerfile/rule/x/",
                       "sourceInfo": {"filename": "Dockerfile", "language": "Dockerfile"},
                       "range": [{"start": {"line": 4}, "end": {"line": 4}}],
                       "workbench": {"rule": "JSONArgsRecommended"}}
    assert docs[13] == {"workbench": {"finished": {"duration": 1.7, "error": "exit code: 3"}}}


def test_rawjson_escapes_like_go_and_cancels_unfinished_vertexes() -> None:
    out = io.StringIO()
    drive(RawJsonPrinter(out), [VertexStarted("a", "RUN a && b > c <d>", ts=5.0), BuildFinished(ts=6.0)])
    first, last = out.getvalue().splitlines()
    assert r'"name":"RUN a \u0026\u0026 b \u003e c \u003cd\u003e"' in first
    assert json.loads(last)["vertexes"] == [{"digest": "a", "name": "RUN a && b > c <d>", "started": rfc3339(5.0),
                                             "completed": rfc3339(6.0), "error": "context canceled"}]


def test_rawjson_clips_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDKIT_STEP_LOG_MAX_SIZE", "4")
    out = io.StringIO()
    drive(RawJsonPrinter(out), [VertexLog("a", "s", data=b"123456"), VertexLog("a", "s", data=b"789")])
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(docs) == 1
    assert base64.b64decode(docs[0]["logs"][0]["data"]) == b"1234\n[output clipped, log limit 4B reached]\n"


# -- end to end ----------------------------------------------------------------------------------------------------

DOCKERFILE = "FROM localhost:5055/busybox\nRUN echo hello-from-run && echo on-stderr >&2\n"


@pytest.fixture()
def two_steps(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def test_e2e_rawjson(registry: str, two_steps: Path, root: Path) -> None:
    def build() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        proc = wb("--progress", "rawjson", str(two_steps), root=root)
        docs = [json.loads(line) for line in proc.stderr.splitlines()]
        vertexes: dict[str, dict[str, Any]] = {}
        for doc in docs:
            for v in doc.get("vertexes", []):
                vertexes.setdefault(v["name"], {}).update(v)
                for key in ("started", "completed"):
                    assert key not in v or RFC3339.match(v[key]), v
        logs = [log for doc in docs for log in doc.get("logs", [])]
        assert docs[-1]["workbench"]["finished"]["duration"] > 0
        return vertexes, logs

    vertexes, logs = build()
    run = next(v for name, v in vertexes.items() if name.startswith("[2/2] RUN echo hello-from-run"))
    base = next(v for name, v in vertexes.items() if name.startswith("[1/2] FROM localhost:5055/busybox"))
    assert run["inputs"] == [base["digest"]] and "completed" in run and not run.get("cached")
    assert run["workbench"]["source"] == {"filename": "Dockerfile", "start_line": 2, "end_line": 2}
    streams = {log["stream"]: base64.b64decode(log["data"]) for log in logs if log["vertex"] == run["digest"]}
    assert streams == {1: b"hello-from-run\n", 2: b"on-stderr\n"}
    assert all(RFC3339.match(log["timestamp"]) for log in logs)

    again, logs = build()
    rerun = again[str(run["name"])]
    assert rerun["digest"] == run["digest"] and rerun["cached"] is True and rerun["workbench"]["cache_key"]
    assert logs == []


def test_e2e_plain(registry: str, two_steps: Path, root: Path) -> None:
    text = wb(str(two_steps), root=root).stderr
    n = re.search(r"^#(\d+) \[2/2\] RUN echo hello-from-run", text, re.M)
    assert n, text
    step = n.group(1)
    assert re.search(rf"^#{step} \d\.\d{{3}} hello-from-run$", text, re.M), text
    assert re.search(rf"^#{step} \d\.\d{{3}} on-stderr$", text, re.M), text
    assert re.search(rf"^#{step} DONE \d+\.\ds$", text, re.M), text
    again = wb(str(two_steps), root=root).stderr
    assert re.search(r"^#(\d+) \[2/2\] RUN echo hello-from-run.*\n#\1 CACHED$", again, re.M), again
    assert "hello-from-run\n" not in again.replace("RUN echo hello-from-run", "")
