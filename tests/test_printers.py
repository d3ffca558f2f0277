import io
import json

from workbench.progress.events import VertexCached, VertexCompleted, VertexFailed, VertexLog, VertexStarted
from workbench.progress.printers import PlainPrinter, RawJsonPrinter


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
    assert "#2 cache miss: the instruction changed" in lines
    assert "#2 0.500 hi" in lines
    assert "#2 part" in lines
    assert "#2 DONE 0.3s" in lines
    assert "#3 ERROR: exit code: 3" in lines


def test_rawjson_is_one_object_per_event() -> None:
    out = io.StringIO()
    RawJsonPrinter(out)(VertexLog("d", "n", stream=2, data=b"x"))
    doc = json.loads(out.getvalue())
    assert doc["type"] == "VertexLog" and doc["stream"] == 2 and doc["data"] == "eA=="
