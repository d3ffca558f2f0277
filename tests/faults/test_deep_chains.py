"""Deep chains of RUN steps: longer than one page of absolute overlay options, and than overlay's stack limit."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.conftest import wb
from workbench.snapshot.manager import SnapshotManager
from workbench.snapshot.overlay import is_mounted, mount_overlay, unmount

FLATTEN_EVERY = 128

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


def _build(tmp_path: Path, steps: list[str]) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\n" + "".join(f"RUN {s}\n" for s in steps))
    out = tmp_path / "out"
    wb(str(ctx), "--output", f"type=local,dest={out}", root=tmp_path / "root")
    return out


def test_200_chained_runs(registry: str, tmp_path: Path) -> None:
    out = _build(tmp_path, [f"echo {i} > /f{i}" for i in range(1, 201)])
    for i in range(1, 201):
        assert (out / f"f{i}").read_text() == f"{i}\n"
    assert (out / "bin" / "busybox").is_file()  # the base is still at the bottom


def test_400_chained_runs_with_deletes_across_the_flattened_bottom(registry: str, tmp_path: Path) -> None:
    steps = [f"echo {i} > /f{i}" for i in range(1, 401)]
    steps[9] = "mkdir /d && echo old > /d/old && echo 10 > /f10"
    steps[199] = "rm -rf /d && mkdir /d && echo new > /d/new && echo 200 > /f200"  # an opaque dir above it
    steps[259] = "echo changed > /f100 && echo 260 > /f260"
    steps[389] = "rm /f5 && echo 390 > /f390"
    out = _build(tmp_path, steps)
    for i in range(1, 401):
        if i in (5, 100):
            continue
        assert (out / f"f{i}").read_text() == f"{i}\n", i
    assert not (out / "f5").exists()  # a whiteout over layers that were flattened
    assert (out / "f100").read_text() == "changed\n"
    assert sorted(os.listdir(out / "d")) == ["new"]
    assert (out / "bin" / "busybox").is_file()


def _layer(mgr: SnapshotManager, chain: list[str], i: int) -> str:
    with mgr.prepare() as prepared:
        with mgr.mount_writable(chain, prepared) as root:
            (root / f"f{i}").write_text(str(i))
            if i % 7 == 0 and i > 1:
                (root / f"f{i - 1}").unlink()
            if i == 0:  # what the flattened copy must keep
                (root / "suid").write_text("s")
                os.chown(root / "suid", 1000, 1001)
                os.chmod(root / "suid", 0o4750)
                os.link(root / "suid", root / "hard")
                os.symlink("suid", root / "link")
                os.setxattr(root / "suid", "user.note", b"kept")
        return mgr.commit(prepared)


def test_manager_mounts_chains_deeper_than_one_mount_holds(tmp_path: Path) -> None:
    mgr = SnapshotManager(tmp_path / ("r" * 60))
    try:
        chain: list[str] = []
        for i in range(2 * FLATTEN_EVERY + 44):  # past what one page of options holds (~250)
            chain.append(_layer(mgr, chain, i))
        with mgr.mount_readonly(chain) as view:
            names = set(os.listdir(view))
            st = os.lstat(view / "suid")
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_nlink) == (1000, 1001, 0o4750, 2)
            assert os.lstat(view / "hard").st_ino == st.st_ino and os.readlink(view / "link") == "suid"
            assert os.getxattr(view / "suid", "user.note") == b"kept"
        want = {f"f{i}" for i in range(len(chain)) if not ((i + 1) % 7 == 0 and i + 1 < len(chain))}
        assert names == want | {"suid", "hard", "link"}
        assert sorted(p.name.split("-")[0] for p in (mgr.tmp / "flat").iterdir()) == ["128", "256"]
    finally:
        mgr.cleanup()
    assert not any((tmp_path / ("r" * 60) / "tmp").iterdir())


def test_writable_mounts_from_threads_keep_the_process_working_dir(tmp_path: Path) -> None:
    # The layout of a root: lower dirs in ROOT/snapshots/<id>/fs, upper and work dirs in ROOT/tmp/<build>/.
    root = tmp_path / ("r" * 100)
    lowers = [root / "snapshots" / f"{i:012x}" / "fs" for i in range(230)]
    for i, d in enumerate(lowers):
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
    assert len(":".join(os.path.relpath(d, root) for d in lowers)) > 4096
    cwd = os.getcwd()
    scratch = [root / "tmp" / f"{os.getpid()}-{n}" / f"new-{n}" for n in range(4)]
    errors: list[BaseException] = []

    def mount(dirs: Path) -> None:
        try:
            for sub in ("fs", "work", "merged"):
                (dirs / sub).mkdir(parents=True)
            mount_overlay(lowers, dirs / "fs", dirs / "work", dirs / "merged")
            (dirs / "merged" / "f0").write_text("changed")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=mount, args=(d,)) for d in scratch]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert os.getcwd() == cwd
        for d in scratch:
            merged = d / "merged"
            assert is_mounted(merged) and len(os.listdir(merged)) == 230 and (merged / "f229").read_text() == "229"
            assert (d / "fs" / "f0").read_text() == "changed"
        assert (lowers[0] / "f0").read_text() == "0"
    finally:
        for d in scratch:
            unmount(d / "merged")
