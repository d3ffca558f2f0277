"""Context file names that are not UTF-8 (or hold newlines) are copied byte for byte, keyed, and printed quoted."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import WORKBENCH, step_outcomes, wb
from workbench.history.codec import dumps_event, loads_event
from workbench.progress.events import VertexStarted

LATIN1 = b"caf\xe9"
NEWLINE = b"new\nline"


def _write(ctx: Path, name: bytes, data: bytes) -> None:
    with open(os.path.join(os.fsencode(ctx), name), "wb") as f:
        f.write(data)



def test_non_utf8_and_newline_names_copy_cache_and_report(registry: str, tmp_path: Path) -> None:
    ctx, root, out = tmp_path / "ctx", tmp_path / "root", tmp_path / "out"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY . /x\nRUN cat /x/caf? /x/new?line > /both\n")
    _write(ctx, LATIN1, b"latin-1 name\n")
    _write(ctx, NEWLINE, b"newline name\n")

    first = wb(str(ctx), "--output", f"type=local,dest={out}", root=root)
    assert "Traceback" not in first.stderr
    x = os.fsencode(out / "x")
    assert sorted(os.listdir(x)) == sorted([b"Dockerfile", LATIN1, NEWLINE])
    assert open(os.path.join(x, LATIN1), "rb").read() == b"latin-1 name\n"
    assert open(os.path.join(x, NEWLINE), "rb").read() == b"newline name\n"
    assert (out / "both").read_text() == "latin-1 name\nnewline name\n"  # a step reads them too

    again = step_outcomes(wb(str(ctx), root=root).stderr)
    assert again and set(again.values()) == {"CACHED"}, again

    _write(ctx, LATIN1, b"changed\n")
    changed = wb(str(ctx), root=root)
    reason = step_outcomes(changed.stderr)["[2/3] COPY . /x"]
    assert reason.startswith('"caf\\xe9" changed (') and "new" not in reason, reason

    ls = subprocess.run(WORKBENCH + ["history", "ls", "--format", "json", "--root", str(root)],
                        capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0, ls.stderr
    newest = json.loads(ls.stdout)[0]["id"]
    show = subprocess.run(WORKBENCH + ["history", "show", newest, "--root", str(root)], capture_output=True,
                          timeout=60)
    assert show.returncode == 0 and b"Traceback" not in show.stderr, show.stderr
    assert b'"caf\\xe9" changed (' in show.stdout
    events = (root / "history" / newest / "events.jsonl").read_bytes()
    events.decode("utf-8")  # valid UTF-8 whatever names the build read
    assert b'"caf\\udce9"' in events  # and the exact name, escaped


def test_recorded_events_keep_names_exactly() -> None:
    files = {"caf\udce9": "1", "new\nline": "2", "café": "3"}
    event = VertexStarted(vertex="v", name="[2/2] COPY . /x", key_parts={"files": files})
    line = dumps_event(event)
    line.encode("utf-8")
    assert loads_event(line) == event


def test_names_are_quoted_only_when_they_need_it() -> None:
    from workbench.solver.checksum import quote_name

    assert quote_name("src/app.py") == "src/app.py"
    assert quote_name("café") == "café"
    assert quote_name(os.fsdecode(LATIN1)) == '"caf\\xe9"'
    assert quote_name(os.fsdecode(NEWLINE)) == '"new\\nline"'
    assert quote_name("\x1b[31mred") == '"\\x1b[31mred"'
