"""End-to-end builds with real parts: partial re-runs, concurrent builds, bad input."""

from __future__ import annotations

import re
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, step_outcomes, wb

DOCKERFILE = """FROM localhost:5055/busybox
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy
COPY b.txt /b.txt
RUN cat /a.txt /b.txt > /both
"""


def _steps(stderr: str) -> dict[str, str]:
    """step name → 'CACHED' or 'RUN' from plain progress output."""
    return {name: "CACHED" if got == "CACHED" else "RUN" for name, got in step_outcomes(stderr).items()}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    return ctx


def test_changing_one_file_reruns_only_what_reads_it(registry: str, project: Path, root: Path) -> None:
    first = _steps(wb(str(project), root=root).stderr)
    assert list(first.values()).count("RUN") == 5  # FROM and the four steps, on a fresh root
    assert set(_steps(wb(str(project), root=root).stderr).values()) == {"CACHED"}
    (project / "b.txt").write_text("changed\n")
    (project / "a.txt").touch()  # a new mtime alone is not a change
    proc = wb(str(project), root=root)
    state = _steps(proc.stderr)
    assert state["[2/5] COPY a.txt /a.txt"] == "CACHED"
    assert state["[3/5] RUN cat /a.txt > /a.copy"] == "CACHED"
    assert state["[4/5] COPY b.txt /b.txt"] == "RUN"
    assert state["[5/5] RUN cat /a.txt /b.txt > /both"] == "RUN"
    assert re.search(r"CACHE MISS: b.txt changed \([0-9a-f]{12} → [0-9a-f]{12}\)", proc.stderr)
    out = project.parent / "out"
    wb(str(project), "--output", f"type=local,dest={out}", root=root)
    assert (out / "both").read_text() == "a\nchanged\n"


def test_two_builds_on_one_root_at_once(registry: str, project: Path, root: Path) -> None:
    outs = [project.parent / f"o{i}.tar" for i in range(2)]
    procs = [subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(project),
                                           "--output", f"type=oci,dest={o}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in outs]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    for o in outs:
        assert "index.json" in tarfile.open(o).getnames()
    assert set(_steps(wb(str(project), root=root).stderr).values()) == {"CACHED"}


@pytest.mark.parametrize(
    ("dockerfile", "expect"),
    [
        ("FROM localhost:5055/busybox\nENV\n", ["Dockerfile:2", "ENV"]),
        ("FROM localhost:5055/busybox\nFROBNICATE x\n", ["Dockerfile:2", ">>> FROBNICATE x", "unknown instruction"]),
        ("FROM localhost:5055/busybox\nCOPY missing.txt /\n", ["Dockerfile:2", '"/missing.txt": not found']),
        ("FROM 127.0.0.1:5999/nothing\n", ["Dockerfile:1", "cannot reach registry 127.0.0.1:5999"]),
        ("FROM localhost:5055/busybox\nRUN echo out && exit 7\n",
         ["Dockerfile:2", 'process "/bin/sh -c echo out && exit 7" did not complete successfully: exit code: 7']),
    ],
)
def test_bad_input_is_one_clear_error_and_cache_stays_usable(
    registry: str, tmp_path: Path, root: Path, dockerfile: str, expect: list[str]
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    proc = wb(str(ctx), root=root, check=False)
    assert proc.returncode != 0
    for text in expect:
        assert text in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("ERROR: failed to solve") == 1
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo fine > /fine\n")
    out = tmp_path / "out"
    wb(str(ctx), "--output", f"type=local,dest={out}", root=root)
    assert (out / "fine").read_text() == "fine\n"


KILLED_STEP = "sleep 30.0193"
"""The killed build's step, told apart from other tests' sleeps in `ps`."""


def test_killed_build_leaves_no_trusted_result(registry: str, tmp_path: Path, root: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM localhost:5055/busybox\nRUN echo half > /half && {KILLED_STEP}\n")
    proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(3, proc.kill)
    timer.start()
    proc.communicate(timeout=60)
    timer.cancel()
    (ctx / "Dockerfile").write_text(f"FROM localhost:5055/busybox\nRUN echo half > /half && {KILLED_STEP}\n")
    again = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = again.communicate(timeout=5)
        pytest.fail("the killed step was trusted from the cache:\n" + err)
    except subprocess.TimeoutExpired:
        again.kill()
        again.communicate()
    # The next build clears what the killed ones left mounted.
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\n")
    wb(str(ctx), root=root)
    with open("/proc/self/mounts") as f:
        assert not [line for line in f if str(root.resolve()) in line]
    # and the killed clients took their steps with them
    deadline = time.monotonic() + 10
    while KILLED_STEP in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "a killed client's step is still running"
        time.sleep(0.2)
