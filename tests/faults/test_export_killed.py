"""An archive export killed mid-way leaves nothing a later run trusts or trips over (issue 15, item 11).

The build writes the archive to a temp file of its own (unique name, same directory) renamed over DEST at the
end; SIGKILL leaves only that temp file, and the next archive written in that directory removes it (its
writer's lock is free). Killed with WORKBENCH_SERVER=0, so the process killed is the one exporting.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts)")


def _valid_oci_archive(path: Path) -> None:
    with tarfile.open(path) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        assert len(index["manifests"]) == 1
        blobs = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("blobs/sha256/")]
        for m in blobs:
            digest = hashlib.sha256()
            f = tar.extractfile(m)
            assert f is not None
            while chunk := f.read(1 << 20):
                digest.update(chunk)
            assert digest.hexdigest() == m.name.rsplit("/", 1)[1], m.name
        assert len(blobs) == 6  # manifest, config, four layers


def _kill_mid_export(ctx: Path, root: Path, dest: Path) -> list[str]:
    """Start an OCI export to `dest` and SIGKILL it once it is writing; returns what it left in dest's dir."""
    env = {**os.environ, "WORKBENCH_SERVER": "0"}
    proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx),
                                         "--output", f"type=oci,dest={dest}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(os.stat(dest.parent / n).st_size > 0 for n in os.listdir(dest.parent)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the export ended before it could be killed:\n{err[-2000:]!r}"
    return os.listdir(dest.parent)


@pytest.mark.parametrize("second", ["same dest", "another dest in the directory"])
def test_killed_oci_export_leaves_no_temp_file_after_the_next_run(
    tmp_path: Path, root: Path, second: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    lines = ["FROM scratch"]
    for i in range(4):
        (ctx / f"big{i}.bin").write_bytes(os.urandom(16 << 20))
        lines.append(f"COPY big{i}.bin /big{i}.bin")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    wb(str(ctx), "-t", "big:1", root=root)  # the layers are built and compressed once, before
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "image.tar"
    left = _kill_mid_export(ctx, root, dest)
    assert left and "image.tar" not in left, left  # killed mid-write: a temp file, never a half DEST

    again = dest if second == "same dest" else out / "other.tar"
    wb(str(ctx), "--output", f"type=oci,dest={again}", root=root)
    assert os.listdir(out) == [again.name]
    _valid_oci_archive(again)
