"""Real overlayfs mounts through the snapshot manager (needs root)."""

import os
import stat
from pathlib import Path

import pytest

from workbench.snapshot.manager import SnapshotManager

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


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
