"""Canceling a build (what watch and rerun do): it stops fast, caches nothing half-done, and the root stays usable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.build import run_build
from workbench.progress.events import Event, EventBus, VertexCached, VertexFailed, VertexStarted
from workbench.request import BuildFailure, BuildRequest, OutputSpec

DOCKERFILE = """\
FROM localhost:5055/busybox
RUN echo base > /base
RUN echo started > /started && sleep 1.5 && echo slow-done > /slow
"""


def _build(ctx: Path, root: Path, out: Path | None = None,
           cancel: threading.Event | None = None) -> tuple[list[Event], BuildFailure | None]:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    outputs = [OutputSpec("local", {"dest": str(out)})] if out else []
    req = BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root, outputs=outputs, cancel=cancel)
    try:
        run_build(req, bus)
    except BuildFailure as e:
        return events, e
    return events, None


def test_cancel_kills_the_running_step_and_caches_nothing_of_it(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    root = tmp_path / "root"
    cancel = threading.Event()
    result: list[tuple[list[Event], BuildFailure | None]] = []
    thread = threading.Thread(target=lambda: result.append(_build(ctx, root, cancel=cancel)))
    thread.start()
    deadline = time.monotonic() + 60
    while not (root / "cache.db").exists() or not _slow_started(root):
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.02)
    t0 = time.monotonic()
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < 1.2, "cancel did not stop the running step promptly"
    events, failure = result[0]
    assert failure is not None and failure.message == "canceled"
    assert any(isinstance(e, VertexFailed) and e.error == "canceled" and "sleep" in e.name for e in events)
    assert not list((root / "tmp").glob("*/bundle-*")), "a container bundle was left behind"

    # The root is usable: the finished step is cached, the canceled one runs again and completes.
    out = tmp_path / "out"
    events, failure = _build(ctx, root, out)
    assert failure is None
    cached = [e.name for e in events if isinstance(e, VertexCached)]
    started = [e.name for e in events if isinstance(e, VertexStarted) and not e.vertex.startswith("internal:")]
    assert any("echo base" in n for n in cached)
    assert any("sleep" in n for n in started)
    assert (out / "slow").read_text() == "slow-done\n" and (out / "base").read_text() == "base\n"


def _slow_started(root: Path) -> bool:
    # the slow step's container exists once its bundle is there
    return any((root / "tmp").glob("*/bundle-*")) if (root / "tmp").exists() else False


def test_build_watch_rebuilds_on_change_and_ignores_dockerignored_files(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY . /src\nRUN ls /src\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    (ctx / "a.txt").write_text("1")
    exe = str(Path(sys.executable).parent / "workbench")
    proc = subprocess.Popen([exe, "build", "--watch", "--root", str(tmp_path / "root"), str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    lines: list[str] = []

    def wait_for(text: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while sum(text in ln for ln in lines) < count:
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(lines)
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]

    try:
        wait_for("watching for changes")
        (ctx / "ignored.txt").write_text("x")  # excluded by .dockerignore: no rebuild
        time.sleep(0.8)
        (ctx / "a.txt").write_text("2")
        wait_for("change detected: a.txt")
        wait_for("watching for changes", 2)
        detected = [ln for ln in lines if "change detected" in ln]
        assert len(detected) == 1 and "ignored.txt" not in detected[0], detected
        assert any("CACHE MISS: a.txt changed" in ln for ln in lines), "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    assert rc == 130
    assert os.path.isdir(tmp_path / "root")


if __name__ == "__main__":
    pytest.main([__file__])
