"""bench/images.py in a tiny mode: it builds, exports and prints its table (figures are not checked)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench" / "images.py"


def test_tree_mix_and_rootfs_subset(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_images", BENCH)
    assert spec and spec.loader
    images = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = images  # dataclasses look their module up there
    spec.loader.exec_module(images)
    files = images.make_tree(tmp_path / "tree", 4)
    total = sum(p.stat().st_size for p in files)
    assert 3_900_000 <= total <= 4_100_000
    kinds = {p.suffix for p in files}
    assert kinds == {".py", ".bin", ".so"}
    assert {p.relative_to(tmp_path / "tree").parts[0] for p in files} == {"a", "b"}  # two layers
    size = images.make_rootfs_tar(tmp_path / "tree", files, tmp_path / "rootfs.tar", 2_000_000)
    with tarfile.open(tmp_path / "rootfs.tar") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    assert 2_000_000 <= sum(m.size for m in members) < total
    assert size == (tmp_path / "rootfs.tar").stat().st_size


def test_tiny_run_prints_its_table(registry: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDCTL", "BUILDKIT_ADDR")}
    env["BENCH_TMP"] = str(tmp_path)
    proc = subprocess.run([sys.executable, str(BENCH), "--sizes", "2", "--cases", "export,import", "--repeat", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("case (2 MB tree)") for line in lines)
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["export-new"],
                                                                                      ["export-reused"], ["import"])}
    assert set(rows) == {"export-new", "export-reused", "import"}
    for row in rows.values():
        seconds, rss, cpu = float(row[2]), float(row[4]), float(row[5])
        assert seconds > 0 and rss > 0 and cpu >= 0
        assert row[6:] == ["-"] * 5  # no BuildKit given: its time, RSS, CPU and both ratios
    assert "BuildKit: not given" in proc.stdout
    assert any("workbench build" in line and "type=oci,dest=" in line for line in lines)
    assert list(tmp_path.iterdir()) == []  # its temp folder is gone at the end


@pytest.mark.parametrize("cases", ["export,nope"])
def test_unknown_case_is_refused(cases: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--cases", cases], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown cases" in proc.stderr
