"""A killed or interrupted `workbench build` takes its running steps with it: no container, mount or process is
left behind (within 2 s), Ctrl-C stops a running step at once, and the next build on the root is correct."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, runc_containers


def leftovers(root: Path, marker: str) -> dict[str, list[str]]:
    """What a build on `root` left running: runc containers, mounts below the root, step processes."""
    real = os.path.realpath(root)
    mounts = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if ln.split()[4].startswith(real + "/")]
    procs = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return {k: v for k, v in {"containers": runc_containers(root, running_only=True), "mounts": mounts,
                              "processes": procs}.items() if v}


def wait_clean(root: Path, marker: str, within: float) -> dict[str, list[str]]:
    deadline = time.monotonic() + within
    while True:
        left = leftovers(root, marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def start(ctx: Path, root: Path, server: bool) -> subprocess.Popen[str]:
    env = dict(os.environ, WORKBENCH_SERVER="1" if server else "0")
    return subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_running(root: Path, marker: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)


def long_step(tmp_path: Path) -> tuple[Path, str]:
    marker = f"sleep {random.randint(100, 999)}.{random.randint(100, 999)}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM localhost:5055/busybox\nRUN echo before > /before\nRUN {marker}\n")
    return ctx, marker


@pytest.mark.parametrize("server", [True, False], ids=["server", "in-process"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP], ids=["KILL", "TERM", "HUP"])
def test_a_killed_client_leaves_nothing_running(tmp_path: Path, registry: str, server: bool, sig: int) -> None:
    ctx, marker = long_step(tmp_path)
    root = tmp_path / "root"
    proc = start(ctx, root, server)
    wait_running(root, marker, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    left = wait_clean(root, marker, within=2.0)
    assert not left, f"left after {signal.Signals(sig).name}: {left}"


@pytest.mark.parametrize("server", [True, False], ids=["server", "in-process"])
def test_ctrl_c_stops_a_running_step_at_once(tmp_path: Path, registry: str, server: bool) -> None:
    ctx, marker = long_step(tmp_path)
    root = tmp_path / "root"
    proc = start(ctx, root, server)
    wait_running(root, marker, proc)
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - interrupted
    assert proc.returncode == 130, err[-2000:]
    assert took < 2.0, f"Ctrl-C took {took:.1f} s"
    assert err.rstrip().splitlines()[-1] == "ERROR: build canceled", err[-2000:]
    assert not wait_clean(root, marker, within=1.0)
    # The cache is consistent: the step that finished is reused, the interrupted one runs again.
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text().replace(marker, "echo after > /after"))
    again = subprocess.run(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "CACHED" in "".join(ln for ln in again.stderr.splitlines() if "echo before" in ln or ln.startswith("#"))


def test_kills_at_random_points_leave_a_consistent_root(tmp_path: Path, registry: str) -> None:
    """SIGKILL / SIGTERM / SIGINT anywhere in a multi-stage build; after each, nothing runs, and a full build
    then gives the right files."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    marker = f"sleep 0.{random.randint(1000, 9999)}"
    (ctx / "Dockerfile").write_text(
        "FROM localhost:5055/busybox AS a\n"
        f"RUN {marker}; echo a > /a\n"
        "FROM localhost:5055/busybox AS b\n"
        f"RUN {marker}; echo b > /b\n"
        "FROM a\n"
        "COPY --from=b /b /b\n"
        f"RUN {marker}; cat /a /b > /ab\n")
    root = tmp_path / "root"
    rng = random.Random(15)
    for i in range(6):
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        proc = start(ctx, root, server=bool(i % 2))
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        left = wait_clean(root, marker, within=2.0)
        assert not left, f"kill {i} ({signal.Signals(sig).name}): {left}"
        if i == 3:  # a prune between kills must not trip over what the killed builds left
            subprocess.run(WORKBENCH + ["prune", "--root", str(root), "--all"], capture_output=True, timeout=60)
    out = tmp_path / "out"
    final = subprocess.run(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", "--output",
                                        f"type=local,dest={out}", str(ctx)], capture_output=True, text=True,
                           timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert (out / "ab").read_text() == "a\nb\n"


@pytest.mark.parametrize("server", [True, False], ids=["server", "in-process"])
def test_a_build_killed_before_any_container_leaves_no_mount(tmp_path: Path, registry: str, server: bool) -> None:
    """Killed while exporting (a read-only overlay of the image mounted, no container ever started)."""
    ctx = tmp_path / "ctx"
    (ctx / "many").mkdir(parents=True)
    for n in range(6000):
        (ctx / "many" / f"f{n}").write_text(str(n))
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY many /many\n")
    root = tmp_path / "root"
    assert subprocess.run(WORKBENCH + ["build", "--root", str(root), str(ctx)], capture_output=True,
                          timeout=120).returncode == 0
    env = dict(os.environ, WORKBENCH_SERVER="1" if server else "0")
    real = os.path.realpath(root)
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--output", f"type=local,dest={out}",
                                             str(ctx)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            table = Path("/proc/self/mountinfo").read_text().splitlines()
            if any(f"{real}/tmp/" in ln and "/ro-" in ln for ln in table):
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            break
    else:
        pytest.fail("the export never ran long enough to be killed while mounted")
    left = wait_clean(root, "no-such-process-marker", within=2.0)
    assert not left, left
