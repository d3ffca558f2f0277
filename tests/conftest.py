"""Shared fixtures: the local registry with the busybox base (Debian docker-registry on 127.0.0.1:5055)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CONFORMANCE = HERE / "conformance"
WORKBENCH = [str(Path(os.sys.executable).parent / "workbench")]
# The builds of this test run use a build server of their own, stopped when the run ends (see below).
os.environ.setdefault("WORKBENCH_SERVER_SOCKET", f"/tmp/workbench-tests-{os.getpid()}/server.sock")


@pytest.fixture(scope="session", autouse=True)
def _stop_build_server() -> Iterator[None]:
    yield
    subprocess.run(WORKBENCH + ["server", "stop"], capture_output=True, timeout=30)
    shutil.rmtree(Path(os.environ["WORKBENCH_SERVER_SOCKET"]).parent, ignore_errors=True)


def real_parts_missing() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("runc", "docker-registry", "skopeo", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


@pytest.fixture(scope="session")
def registry() -> str:
    """Starts (or reuses) the registry on 127.0.0.1:5055 holding localhost:5055/busybox; returns the base tar."""
    why = real_parts_missing()
    if why:
        pytest.skip(why)
    proc = subprocess.run(["sh", str(CONFORMANCE / "registry.sh")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


_ROOTS: list[Path] = []
"""The state roots the `root` fixture handed out, checked by `workbench doctor` when the run ends."""


@pytest.fixture()
def root(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "root"
    if request.node.get_closest_marker("breaks_root") is None:
        _ROOTS.append(path)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "breaks_root: the test damages its `root` on purpose (doctor skips it)")
    _children_get_default_signals()


def _children_get_default_signals() -> None:
    """The processes the tests start get the signals' default dispositions, as from a terminal. A suite run in the
    background or under `nohup` ignores SIGINT or SIGHUP, and an ignored signal stays ignored across exec: a
    client would then rightly outlive the Ctrl-C or hang-up a test sends it. A handled signal is reset to its
    default by exec, so this process handles them instead (as it would have: SIGINT stops pytest, SIGHUP not)."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGHUP, signal.SIGTERM):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, _ignore)


def _ignore(signum: int, frame: object) -> None:
    """A handler doing nothing: ignored here, default in children."""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the run, every root the tests built in must be healthy: private, a sound index, and no mount or
    container left behind by the builds that were killed, canceled or failed along the way."""
    from workbench import doctor

    unhealthy = []
    for path in _ROOTS:
        if not path.is_dir():
            continue
        for check in (doctor.check_permissions(path), doctor.check_database(path),
                      doctor.check_mounts(path, doctor.scan(path)), doctor.check_containers(path)):
            if check.status != "OK":
                unhealthy.append(f"{path}: {check.line()}")
    if unhealthy:
        print("\nworkbench doctor after the test run:\n" + "\n".join(unhealthy))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def wb(*args: str, root: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", *args],
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def step_outcomes(stderr: str) -> dict[str, str]:
    """step name → 'CACHED' or its miss reason, from `--progress plain` output (vertices that are not steps,
    such as cache imports, are left out)."""
    names: dict[str, str] = {}
    out: dict[str, str] = {}
    for line in stderr.splitlines():
        num, _, rest = line.partition(" ")
        if rest.startswith("["):
            names[num] = rest
        elif rest == "CACHED" and num in names:
            out[names[num]] = "CACHED"
        elif rest.startswith("CACHE MISS: ") and num in names:
            out[names[num]] = rest[len("CACHE MISS: "):]
    return out


def cached_count(stderr: str) -> int:
    """How many steps a build reported cached (plain progress lines `#N CACHED`)."""
    return len(re.findall(r"^#\d+ CACHED$", stderr, re.MULTILINE))


def runc_containers(root: Path, running_only: bool = False) -> list[str]:
    """Ids of the runc containers the builds on `root` left (each build process keeps its runc state under
    ROOT/tmp/<pid>-…/runc); `running_only`: only those still running."""
    found = []
    for state in root.glob("tmp/*/runc"):
        proc = subprocess.run(["runc", "--root", str(state), "list", "--format", "json"], capture_output=True,
                              text=True)
        found += [c["id"] for c in json.loads(proc.stdout or "null") or []
                  if not running_only or c.get("status") == "running"]
    return found
