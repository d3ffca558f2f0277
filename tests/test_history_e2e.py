"""Every build leaves a session: history ls/show/logs/diff/trace/export/rm read it, replay reproduces the
plain output exactly, secrets leave no trace, and a build killed mid-way still replays up to the kill."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb
from workbench import gc
from workbench.snapshot.scratch import mounts_under

DOCKERFILE = """FROM localhost:5055/busybox
COPY a.txt /a.txt
RUN --mount=type=secret,id=token cat /run/secrets/token && echo "len=$(wc -c < /run/secrets/token)"
RUN cat /a.txt && echo built
"""
SECRET = "wb-secret-Zq81xK-do-not-record"

OTLP_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "anyValue": {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
            "stringValue": {"type": "string"}, "boolValue": {"type": "boolean"},
            "intValue": {"type": "string", "pattern": "^-?[0-9]+$"}, "doubleValue": {"type": "number"}},
            "additionalProperties": False},
        "keyValue": {"type": "object", "required": ["key", "value"], "additionalProperties": False,
                     "properties": {"key": {"type": "string", "minLength": 1}, "value": {"$ref": "#/$defs/anyValue"}}},
        "attributes": {"type": "array", "items": {"$ref": "#/$defs/keyValue"}},
        "nanos": {"type": "string", "pattern": "^[0-9]{1,20}$"},
        "span": {"type": "object", "additionalProperties": False,
                 "required": ["traceId", "spanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano"],
                 "properties": {
                     "traceId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                     "spanId": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                     "parentSpanId": {"type": "string", "pattern": "^([0-9a-f]{16})?$"},
                     "traceState": {"type": "string"}, "flags": {"type": "integer"},
                     "name": {"type": "string"}, "kind": {"type": "integer", "minimum": 0, "maximum": 5},
                     "startTimeUnixNano": {"$ref": "#/$defs/nanos"}, "endTimeUnixNano": {"$ref": "#/$defs/nanos"},
                     "attributes": {"$ref": "#/$defs/attributes"},
                     "droppedAttributesCount": {"type": "integer"},
                     "events": {"type": "array", "items": {
                         "type": "object", "required": ["timeUnixNano", "name"], "additionalProperties": False,
                         "properties": {"timeUnixNano": {"$ref": "#/$defs/nanos"}, "name": {"type": "string"},
                                        "attributes": {"$ref": "#/$defs/attributes"},
                                        "droppedAttributesCount": {"type": "integer"}}}},
                     "links": {"type": "array"},
                     "status": {"type": "object", "additionalProperties": False, "properties": {
                         "code": {"type": "integer", "enum": [0, 1, 2]}, "message": {"type": "string"}}},
                 }},
    },
    "type": "object", "required": ["resourceSpans"], "additionalProperties": False,
    "properties": {"resourceSpans": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["scopeSpans"], "additionalProperties": False,
        "properties": {
            "resource": {"type": "object", "properties": {"attributes": {"$ref": "#/$defs/attributes"}}},
            "schemaUrl": {"type": "string"},
            "scopeSpans": {"type": "array", "items": {
                "type": "object", "required": ["spans"], "additionalProperties": False,
                "properties": {"scope": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "version": {"type": "string"}}},
                    "schemaUrl": {"type": "string"},
                    "spans": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/span"}}}}}}}}},
}


def hist(*args: str, root: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(WORKBENCH + ["history", *args, "--root", str(root)], capture_output=True, text=True,
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def builds(registry: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Three builds of one project with a secret: cold, warm, after a.txt changed; their live plain output."""
    tmp = tmp_path_factory.mktemp("hist")
    ctx, root = tmp / "ctx", tmp / "root"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("one\n")
    (tmp / "token").write_text(SECRET + "\n")
    secret = ["--secret", f"id=token,src={tmp / 'token'}"]
    cold = wb(*secret, str(ctx), root=root)
    warm = wb(*secret, str(ctx), root=root)
    (ctx / "a.txt").write_text("two\n")
    changed = wb(*secret, "--build-arg", "UNUSED=1", str(ctx), root=root)
    ids = [json.loads(hist("ls", "--format", "json", root=root).stdout)[i]["id"] for i in (2, 1, 0)]
    return {"root": root, "ctx": ctx, "tmp": tmp, "stderr": [cold.stderr, warm.stderr, changed.stderr],
            "ids": ids}


def test_ls_and_show_read_the_recorded_builds(builds: dict) -> None:
    root, (a, w, b) = builds["root"], builds["ids"]
    ls = hist("ls", root=root).stdout.splitlines()
    assert ls[0].split()[:7] == ["BUILD", "ID", "CREATED", "AT", "STATUS", "DURATION", "STEPS"]
    assert [line.split()[0] for line in ls[1:]] == [b, w, a]
    assert ls[2].split()[5:8] == ["8", "4", "0"]  # the warm build: FROM, COPY and both RUNs cached
    row = ls[1].split()
    assert row[3] == "completed" and row[-1].endswith("ctx/Dockerfile")
    total, cached, failed = map(int, row[5:8])
    assert (total, cached, failed) == (8, 1, 0)  # FROM cached; COPY and both RUNs ran again
    show = hist("show", b[:8], root=root).stdout
    assert f"ID:           {b}" in show and "Status:       completed" in show
    assert "Secrets:      token (ids only" in show
    assert "Build args:   UNUSED=1" in show
    assert "Slowest steps:" in show
    misses = show.split("Cache misses:")[1]
    assert "#6 [stage-0 2/4] COPY a.txt /a.txt" in misses and "a.txt changed" in misses
    assert "parent step missed: [stage-0 2/4] COPY a.txt /a.txt" in misses


def test_replay_reproduces_the_live_plain_output_exactly(builds: dict) -> None:
    root = builds["root"]
    for ref, live in zip(builds["ids"], builds["stderr"], strict=True):
        replay = subprocess.run(WORKBENCH + ["replay", ref, "--root", str(root), "--progress", "plain"],
                                capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout == live
        assert hist("logs", ref, root=root).stdout == live
    step = hist("logs", "^0", "#8", root=root).stdout
    assert step == "two\nbuilt\n"


def test_diff_says_which_steps_changed_cache_state_and_why(builds: dict) -> None:
    cold, warm, changed = builds["ids"]
    out = hist("diff", warm, changed, root=builds["root"]).stdout
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    assert not any(name.startswith("[stage-0 1/4] FROM") for name in rows)  # cached in both: no change
    assert rows["[stage-0 2/4] COPY a.txt /a.txt"][5:8] == ["CACHED", "RAN", "a.txt"]
    assert "a.txt changed" in out
    assert "parent step missed: [stage-0 2/4] COPY a.txt /a.txt" in out
    assert "3 step(s) changed cache state, 1 the same." in out
    back = hist("diff", cold, warm, root=builds["root"]).stdout
    assert "A missed (never built before); B found A's result in the cache" in back
    same = hist("diff", changed, changed, root=builds["root"]).stdout
    assert "No step changed cache state" in same


def test_trace_is_valid_otlp_json(builds: dict) -> None:
    import jsonschema

    doc = json.loads(hist("trace", "^0", root=builds["root"]).stdout)
    jsonschema.validate(doc, OTLP_SCHEMA)
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    root_span = spans[0]
    assert root_span["name"] == "build" and "parentSpanId" not in root_span
    assert all(s["parentSpanId"] == root_span["spanId"] for s in spans[1:])
    names = [s["name"] for s in spans]
    assert "[stage-0 2/4] COPY a.txt /a.txt" in names
    for s in spans:
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 1_600_000_000 * 10**9
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject a malformed trace
        bad = json.loads(json.dumps(doc))
        bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "xyz"
        jsonschema.validate(bad, OTLP_SCHEMA)


def test_no_trace_of_the_secret_in_recorded_sessions(builds: dict) -> None:
    root, tmp = builds["root"], builds["tmp"]
    export = tmp / "export.tar.gz"
    hist("export", "^0", str(export), root=root)
    forms = [SECRET.encode(), base64.b64encode(SECRET.encode()), SECRET.encode().hex().encode(),
             json.dumps(SECRET).encode()[1:-1], base64.b64encode(SECRET.encode() + b"\n")]
    scanned = 0
    for path in [*(root / "history").rglob("*"), export]:
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            for form in forms:
                assert form not in data, f"{form!r} in {path}"
    assert scanned >= 11
    # the step did print it (masked): the redaction happened, the step was not silent
    for live in builds["stderr"]:
        assert SECRET not in live
    cold, _, changed = builds["stderr"]
    assert "#7 0." in cold and "****" in cold and "len=31" in cold
    assert "#7 CACHE MISS" in changed and "****" in changed


def test_export_import_and_rm(builds: dict, tmp_path: Path) -> None:
    root = builds["root"]
    archive = tmp_path / "b.tar"
    hist("export", builds["ids"][2], str(archive), root=root)
    other = tmp_path / "other-root"
    imported = hist("import", str(archive), root=other).stdout.strip()
    assert imported == builds["ids"][2]
    replay = subprocess.run(WORKBENCH + ["replay", str(archive), "--progress", "plain"], capture_output=True,
                            text=True, timeout=60)
    assert replay.stdout == builds["stderr"][2]
    hist("rm", imported, root=other)
    assert hist("ls", "--format", "json", root=other).stdout.strip() == "[]"
    missing = hist("show", "nosuchbuild", root=other, check=False)
    assert missing.returncode == 1 and "no build record 'nosuchbuild'" in missing.stderr


def test_in_process_build_records_and_retention_applies(builds: dict, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The TUI calls run_build in-process: it records too; retention by count runs after each build."""
    from workbench.history.recorder import recording_engine
    from workbench.history.store import list_sessions
    from workbench.progress.events import EventBus
    from workbench.request import BuildRequest

    root = tmp_path / "root"
    ctx = tmp_path / "c"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo in-process\n")
    monkeypatch.setenv("WORKBENCH_HISTORY_MAX_ENTRIES", "2")
    for _ in range(3):
        got: list[object] = []
        bus = EventBus()
        bus.subscribe(got.append)
        recording_engine().build(BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root), bus)
    records = list_sessions(root / "history")
    assert len(records) == 2 and all(r.status == "completed" for r in records)
    assert (records[0].path / "llb.jsonl").read_text().count('"source"') == 2


def test_a_killed_build_still_replays_up_to_the_kill(registry: str, tmp_path: Path) -> None:
    ctx, root = tmp_path / "ctx", tmp_path / "root"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\n"
                                    "RUN for i in 1 2 3; do echo line $i; done; echo KILL-ME-NOW; sleep 60\n")
    err = tmp_path / "stderr"
    env = dict(os.environ, WORKBENCH_SERVER="0")
    with err.open("w") as f:
        victim = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx)],
                                  stdout=subprocess.DEVNULL, stderr=f, env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while "KILL-ME-NOW" not in err.read_text():
            assert time.time() < deadline and victim.poll() is None, err.read_text()
            time.sleep(0.05)
        time.sleep(0.1)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        live = err.read_text()
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
        gc.prune(root, all=True)  # the killed build's container (sleep 60) and mounts, as after a crash
    assert mounts_under(root) == []
    ls = json.loads(hist("ls", "--format", "json", root=root).stdout)
    assert len(ls) == 1 and ls[0]["status"] == "interrupted"
    replay = subprocess.run(WORKBENCH + ["replay", ls[0]["id"], "--root", str(root), "--progress", "plain"],
                            capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stderr
    assert "KILL-ME-NOW" in replay.stdout and "line 3" in replay.stdout
    assert replay.stdout == live
    assert "interrupted" in hist("show", "^0", root=root).stdout
