"""`workbench doctor`: a healthy root passes; each kind of damage gives its FAIL or WARN line with the fix,
and `--fix` repairs it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb
from workbench.doctor import runc_verdict

pytestmark = pytest.mark.breaks_root  # each test damages its root to see doctor say so


def doctor(root: Path, *extra: str) -> tuple[int, dict[str, str]]:
    proc = subprocess.run(WORKBENCH + ["doctor", "--root", str(root), *extra], capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = {}
    for line in proc.stdout.splitlines():
        status, rest = line.split(" ", 1)
        name, text = rest.strip().split(": ", 1)
        assert status in ("OK", "WARN", "FAIL"), line
        lines[name] = f"{status} {text}"
    return proc.returncode, lines


@pytest.fixture()
def built(registry: str, root: Path, tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo hi > /hi\n")
    wb(str(ctx), root=root)
    return root


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_healthy_root(built: Path) -> None:
    code, lines = doctor(built)
    assert code == 0, lines
    for name in ("database", "orphans", "mounts", "containers", "overlayfs"):
        assert lines[name].startswith("OK "), lines
    assert not lines["permissions"].startswith("FAIL"), lines
    assert set(lines) >= {"permissions", "database", "orphans", "mounts", "containers", "runc", "overlayfs"}


def test_open_root(built: Path) -> None:
    os.chmod(built, 0o755)
    code, lines = doctor(built)
    assert code == 1
    assert lines["permissions"].startswith("FAIL ") and "0755" in lines["permissions"]
    assert f"chmod 700 {built}" in lines["permissions"]
    code, lines = doctor(built, "--fix")
    assert code == 0 and lines["permissions"].startswith("OK ")
    assert os.stat(built).st_mode & 0o777 == 0o700


def test_corrupt_index(built: Path) -> None:
    (built / "cache.db").write_bytes(b"not a database at all" * 50)
    for suffix in ("-wal", "-shm"):
        Path(f"{built / 'cache.db'}{suffix}").unlink(missing_ok=True)
    code, lines = doctor(built)
    assert code == 1
    assert lines["database"].startswith("FAIL ") and "corrupt" in lines["database"], lines
    assert "not checked" in lines["orphans"]
    assert (built / "cache.db").read_bytes().startswith(b"not a database")  # reported, not repaired
    code, lines = doctor(built, "--fix")
    assert code == 0 and lines["database"].startswith("OK "), lines
    assert list(built.glob("cache.db.corrupt-*"))


def test_orphan_snapshot(built: Path) -> None:
    orphan = built / "snapshots" / "0123456789ab"
    (orphan / "fs").mkdir(parents=True)
    (orphan / "fs" / "junk").write_bytes(b"x" * 100_000)
    code, lines = doctor(built)
    assert code == 0
    assert lines["orphans"].startswith("WARN ") and "1 snapshot dirs without a record" in lines["orphans"]
    assert "0123456789ab" in lines["orphans"] and "workbench prune" in lines["orphans"]
    code, lines = doctor(built, "--fix")
    assert lines["orphans"].startswith("OK ") and not orphan.exists()


@pytest.fixture()
def stale_mount(built: Path) -> Iterator[Path]:
    target = built / "tmp" / f"{_dead_pid()}-abcdef" / "merged"
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


def test_stale_mount(stale_mount: Path, built: Path) -> None:
    code, lines = doctor(built)
    assert code == 0
    assert lines["mounts"].startswith("WARN ") and str(stale_mount) in lines["mounts"], lines
    code, lines = doctor(built, "--fix")
    assert lines["mounts"].startswith("OK "), lines
    with open("/proc/self/mountinfo") as f:
        assert f" {stale_mount} " not in f.read()


def test_dead_container(built: Path) -> None:
    state = built / "tmp" / f"{_dead_pid()}-fedcba" / "runc" / "wb-left-behind"
    state.mkdir(parents=True)
    code, lines = doctor(built)
    assert code == 0
    assert lines["containers"].startswith("WARN ") and "wb-left-behind" in lines["containers"], lines
    code, lines = doctor(built, "--fix")
    assert lines["containers"].startswith("OK ") and not state.exists()


def test_runc_versions() -> None:
    status, text = runc_verdict("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n")
    assert status == "WARN" and "CVE-2024-21626" in text and "patched" in text
    status, text = runc_verdict("runc version 1.1.5\ncommit: v1.1.5-0-gf19387a6\n")
    assert status == "FAIL" and "CVE-2024-21626" in text
    assert runc_verdict("runc version 1.1.15\ncommit: v1.1.15\n")[0] == "WARN"
    assert runc_verdict("runc version 1.2.5\ncommit: v1.2.5\n")[0] == "OK"
