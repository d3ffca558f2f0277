"""A full disk under the root (a small tmpfs mounted as ROOT): the build fails with one line
(`no space left on device under ROOT: N MB free; workbench prune frees M MB`), no traceback, nothing
half-written (every record's snapshots complete, no temp dirs or mounts left); once space is freed the next
build works and a rebuild of it is fully cached."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb

BASE = "FROM localhost:5055/busybox\n"


@pytest.fixture()
def small_root(tmp_path: Path) -> Iterator[Path]:
    """ROOT on its own 48 MB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["sh", "-c", f"umount -R '{root}' || umount -l '{root}'"], capture_output=True)


def _project(tmp_path: Path, name: str, dockerfile: str, files: dict[str, bytes] | None = None) -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for n, data in (files or {}).items():
        (ctx / n).write_bytes(data)
    return ctx


def _line(root: Path, stderr: str) -> re.Match[str]:
    """The disk-full line, the only error line, and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    pattern = (rf"^ERROR: no space left on device under {re.escape(str(root))}: (\d+) MB free; "
               rf"workbench prune frees (\d+) MB$")
    found = list(re.finditer(pattern, stderr, re.MULTILINE))
    assert len(found) == 1, stderr[-3000:]
    assert stderr.rstrip("\n").endswith(found[0][0]), stderr[-3000:]
    assert "ERROR: failed to solve" not in stderr
    return found[0]


def _consistent(root: Path) -> None:
    """Every record's snapshots are complete, and no temp dir or mount is left under the root."""
    db = sqlite3.connect(root / "cache.db")
    chains = [c for (c,) in db.execute("SELECT chain FROM results")]
    db.close()
    for chain in chains:
        for snap in json.loads(chain):
            assert (root / "snapshots" / snap / "fs").is_dir(), f"record points at missing snapshot {snap}"
    assert not list((root / "tmp").iterdir())
    with open("/proc/self/mountinfo") as f:
        assert not [ln for ln in f if f" {root}/" in ln]


def _fill(root: Path, leave: int) -> Path:
    """A filler file that leaves `leave` bytes free on the root's filesystem."""
    filler = root / "filler"
    st = os.statvfs(root)
    size = max(st.f_bavail * st.f_frsize - leave, 0)
    with open(filler, "wb") as f:
        try:
            f.truncate(0)
            chunk = bytes(1 << 20)
            while size > 0:
                f.write(chunk[:min(size, len(chunk))])
                size -= len(chunk)
        except OSError:
            pass
    return filler


def test_step_filling_the_disk(registry: str, small_root: Path, tmp_path: Path) -> None:
    root = small_root
    kept = _project(tmp_path, "kept", BASE + "RUN head -c 6000000 /dev/urandom > /six\n")
    wb(str(kept), root=root)
    big = _project(tmp_path, "big", BASE + "RUN dd if=/dev/zero of=/big bs=1M count=100\n")
    proc = wb(str(big), root=root, check=False)
    assert proc.returncode == 1
    m = _line(root, proc.stderr)
    assert int(m[1]) >= 30  # the failed step's upper dir is gone again
    assert int(m[2]) >= 5  # the 6 MB result of the other build
    _consistent(root)
    small = _project(tmp_path, "small", BASE + "RUN echo fine > /ok\n")
    wb(str(small), root=root)
    again = wb(str(small), root=root)
    assert len(re.findall(r"^#\d+ CACHED$", again.stderr, re.MULTILINE)) == 2
    out = subprocess.run(WORKBENCH + ["prune", "--root", str(root)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("leave", [0, 200_000, 1_500_000])
def test_full_disk_anywhere_in_a_build(registry: str, small_root: Path, tmp_path: Path, leave: int) -> None:
    """A disk left with no, little or some room: the build stops wherever it runs out (the history record,
    the index, a COPY, a RUN) with the one line; with the filler gone, the same build works."""
    root = small_root
    wb(str(_project(tmp_path, "warm", BASE + "RUN echo warm > /w\n")), root=root)
    ctx = _project(tmp_path, "ctx", BASE + "COPY blob.bin /blob\nRUN cp /blob /blob2 && echo done > /d\n",
                   {"blob.bin": os.urandom(3_000_000)})
    filler = _fill(root, leave)
    proc = wb(str(ctx), root=root, check=False)
    assert proc.returncode == 1
    _line(root, proc.stderr)
    filler.unlink()
    _consistent(root)
    wb(str(ctx), root=root)
    again = wb(str(ctx), root=root)
    assert len(re.findall(r"^#\d+ CACHED$", again.stderr, re.MULTILINE)) == 3
    _consistent(root)
    hist = subprocess.run(WORKBENCH + ["history", "ls", "--root", str(root)], capture_output=True, text=True)
    assert hist.returncode == 0 and "Traceback" not in hist.stderr, hist.stderr


def test_what_counts_as_a_full_disk(tmp_path: Path) -> None:
    """The errors a full disk raises, raw or wrapped, are told apart from other failures."""
    import errno

    from workbench.diskfull import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"), tmp_path)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("step failed") from e
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped, tmp_path)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    assert not is_disk_full(sqlite3.OperationalError("disk I/O error"), tmp_path)  # plenty of room here
    assert not is_disk_full(ValueError("bad value"), tmp_path)


def test_full_disk_in_other_commands_is_one_line(small_root: Path, tmp_path: Path) -> None:
    """Not only builds: `image import` of a rootfs bigger than the disk ends with the same one line."""
    rootfs = tmp_path / "rootfs.tar"
    import tarfile

    with tarfile.open(rootfs, "w") as tf:
        for n in range(3):
            blob = tmp_path / f"big{n}"
            blob.write_bytes(os.urandom(24 * 1024 * 1024))
            tf.add(blob, arcname=f"big{n}")
    proc = subprocess.run(WORKBENCH + ["image", "import", "--root", str(small_root), str(rootfs), "big:1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    _line(small_root, proc.stderr)
