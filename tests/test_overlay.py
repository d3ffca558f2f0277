"""Real overlayfs mounts, directly and through the snapshot manager (needs root)."""

import errno
import os
import stat
from pathlib import Path

import pytest

from workbench.snapshot.manager import SnapshotManager
from workbench.snapshot.overlay import OverlayError, is_mounted, mount_overlay, unmount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


def _is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_mount_writes_go_to_upper_with_whiteouts(tmp_path: Path) -> None:
    low1, low2, upper, work, target = (tmp_path / n for n in ("l1", "l2", "upper", "work", "merged"))
    for d in (low1, low2, upper, work, target):
        d.mkdir()
    (low2 / "base").write_text("base")
    (low2 / "shadowed").write_text("old")
    (low1 / "shadowed").write_text("new")  # low1 is topmost
    (low2 / "dir").mkdir()
    (low2 / "dir" / "old").write_text("o")
    mount_overlay([low1, low2], upper, work, target)
    try:
        assert is_mounted(target)
        assert (target / "shadowed").read_text() == "new" and (target / "base").read_text() == "base"
        (target / "added").write_text("a")
        (target / "base").unlink()
        (target / "dir" / "old").unlink()
        (target / "dir").rmdir()
        (target / "dir").mkdir()  # recreated empty: opaque in upper
        assert sorted(os.listdir(target)) == ["added", "dir", "shadowed"]
    finally:
        unmount(target)
    assert not is_mounted(target) and os.listdir(target) == []
    assert (upper / "added").read_text() == "a"
    assert _is_whiteout(upper / "base")
    assert os.getxattr(upper / "dir", "trusted.overlay.opaque") == b"y"
    assert (low2 / "base").read_text() == "base"  # lowers untouched


def test_sixty_deep_lowers_fit_with_relative_paths(tmp_path: Path) -> None:
    parent = tmp_path / ("p" * 100) / ("q" * 100)
    lowers = [parent / f"snapshot-{i:03d}-{'x' * 40}" / "fs" for i in range(60)]
    for i, d in enumerate(lowers):
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
    assert len(":".join(str(d) for d in lowers)) > 4096  # absolute paths would not fit
    target = tmp_path / "merged"
    target.mkdir()
    mount_overlay(lowers, None, None, target)
    try:
        assert len(os.listdir(target)) == 60 and (target / "f59").read_text() == "59"
        with pytest.raises(OSError) as e:
            (target / "x").write_text("read-only")
        assert e.value.errno == errno.EROFS
    finally:
        unmount(target)
    assert not is_mounted(target)


def test_single_lower_is_a_read_only_bind(tmp_path: Path) -> None:
    low, target = tmp_path / "low", tmp_path / "t"
    low.mkdir()
    target.mkdir()
    (low / "f").write_text("f")
    mount_overlay([low], None, None, target)
    try:
        assert is_mounted(target)  # os.path.ismount misses same-filesystem bind mounts
        assert (target / "f").read_text() == "f"
        with pytest.raises(OSError) as e:
            (target / "g").write_text("g")
        assert e.value.errno == errno.EROFS
    finally:
        unmount(target)
    assert not is_mounted(target) and os.listdir(target) == []


def test_errors_and_unmount_tolerance(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(OverlayError, match="missing"):  # mount's stderr names the bad dir
        mount_overlay([tmp_path / "missing", tmp_path / "t"], None, None, target)
    with pytest.raises(OverlayError):
        mount_overlay([], None, None, target)
    with pytest.raises(OverlayError, match="cannot be used"):
        mount_overlay([tmp_path / "a,b", tmp_path / "c"], None, None, target)
    unmount(target)  # not mounted: fine
    unmount(tmp_path / "does-not-exist")


def _layer(mgr: SnapshotManager, chain: list[str], fill) -> str:  # type: ignore[no-untyped-def]
    with mgr.prepare() as prepared:
        with mgr.mount_writable(chain, prepared) as root:
            fill(root)
        return mgr.commit(prepared)


def test_upper_dir_is_the_layer_with_whiteouts(tmp_path: Path) -> None:
    mgr = SnapshotManager(tmp_path)
    base = _layer(mgr, [], lambda r: ((r / "keep").write_text("k"), (r / "gone").write_text("g")))
    top = _layer(mgr, [base], lambda r: ((r / "gone").unlink(), (r / "new").write_text("n")))
    layer = mgr.path(top)
    assert (layer / "new").read_text() == "n"
    assert not (layer / "keep").exists()
    st = os.lstat(layer / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    with mgr.mount_readonly([base, top]) as view:
        assert sorted(os.listdir(view)) == ["keep", "new"]
        with pytest.raises(OSError):
            (view / "x").write_text("read-only")
    mgr.cleanup()
    assert not any(p for p in (tmp_path / "tmp").iterdir())


def test_many_layers_fit_in_one_mount(tmp_path: Path) -> None:
    mgr = SnapshotManager(tmp_path)
    chain: list[str] = []
    for i in range(60):
        chain.append(_layer(mgr, chain, lambda r, i=i: (r / f"f{i}").write_text(str(i))))
    with mgr.mount_readonly(chain) as view:
        assert len(os.listdir(view)) == 60
        assert (view / "f59").read_text() == "59"
    mgr.cleanup()


def test_uncommitted_snapshot_is_removed(tmp_path: Path) -> None:
    mgr = SnapshotManager(tmp_path)
    with pytest.raises(RuntimeError):
        with mgr.prepare() as prepared:
            with mgr.mount_writable([], prepared) as root:
                (root / "half").write_text("x")
            raise RuntimeError("step failed")
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == ["empty"]
    mgr.cleanup()
