"""The copying snapshotter (WORKBENCH_SNAPSHOTTER=copy) writes the same layers as overlayfs, and mounts none."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from tests.rootless import conftest as rootless_conftest
from tests.rootless.conftest import RootlessUser
from workbench.snapshot import copy as copysnap

rootless_user = rootless_conftest.rootless_user  # the fixture, for the rootless case

DOCKERFILE = """FROM localhost:5055/busybox
COPY a.txt /data/a.txt
COPY --chown=1000:1000 sub /data/sub
COPY sub /data/other
RUN sleep 0.5 && echo more >> /data/a.txt && rm /data/sub/gone.txt && chmod 600 /data/sub/keep.txt \\
 && chown 7:8 /data/other/keep.txt && rm -rf /data/other && mkdir -p /data/other/deep && touch /data/other/new \\
 && ln -s ../a.txt /data/link && ln /data/a.txt /data/hard && mkdir -m 750 /made && echo x > /made/f \\
 && rm /etc/group && rm -rf /data/sub/d && echo y > /data/sub/d
RUN ls -a /data/sub /data/other > /list && cat /data/a.txt /data/sub/d > /cat && test ! -e /etc/group
"""


def _entries(layer: bytes) -> list[tuple[object, ...]]:
    """Each entry of a layer: path, type, mode, owner, link target, and a digest of its content."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for m in tar:
            data = tar.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            out.append((m.name, m.type, m.mode, m.uid, m.gid, m.linkname, hashlib.sha256(data).hexdigest()[:12]))
    return out


def _layers(oci: Path) -> list[list[tuple[object, ...]]]:
    with tarfile.open(oci) as t:
        def blob(digest: str) -> bytes:
            return t.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]

        index = json.loads(t.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        return [_entries(blob(layer["digest"])) for layer in manifest["layers"]]


def _overlay_mounts_under(path: Path) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f if " - overlay " in line and line.split()[4].startswith(str(path))}


def _build(ctx: Path, root: Path, snapshotter: str) -> tuple[list[list[tuple[object, ...]]], set[str]]:
    """The exported image's layers, and the overlay mounts seen under `root` while it built."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.01):
            seen.update(_overlay_mounts_under(root))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = ctx.parent / f"{snapshotter}.tar"
    env = {**os.environ, "WORKBENCH_SNAPSHOTTER": snapshotter, "WORKBENCH_SERVER": "0"}
    try:
        proc = subprocess.run(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", "--output",
                                           f"type=oci,dest={out}", str(ctx)],
                              capture_output=True, text=True, env=env, timeout=300)
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _layers(out), seen


@pytest.mark.real
def test_copy_snapshotter_writes_the_layers_overlay_writes(registry: str, tmp_path: Path, root: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "sub" / "d").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a\n")
    for name in ("keep.txt", "gone.txt", "d/inner"):
        (ctx / "sub" / name).write_text(name)
    overlay, overlay_mounts = _build(ctx, root, "overlay")
    copied, copy_mounts = _build(ctx, tmp_path / "root-copy", "copy")
    assert overlay_mounts, "the watcher saw no overlay mount of the overlay build"
    assert copy_mounts == set()
    assert copied == overlay
    run = {e[0]: e for e in copied[-2]}  # the RUN that modifies and deletes
    assert run["data/sub/.wh.gone.txt"][1] == tarfile.REGTYPE and "etc/.wh.group" in run
    assert "data/other/.wh..wh..opq" in run and "data/other/.wh.keep.txt" not in run
    assert run["data/sub/keep.txt"][2:5] == (0o600, 1000, 1000)
    assert run["made"][2] == 0o750 and run["data/link"][5] == "../a.txt"
    assert "data/sub/d/.wh..wh..opq" not in run and run["data/sub/d"][1] == tarfile.REGTYPE


def test_unknown_snapshotter_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.snapshot.manager import snapshotter

    monkeypatch.setenv("WORKBENCH_SNAPSHOTTER", "zfs")
    with pytest.raises(OSError, match=r"WORKBENCH_SNAPSHOTTER='zfs': unknown snapshotter; use one of overlay, copy"):
        snapshotter()


def test_tracked_changes_in_overlay_format(tmp_path: Path) -> None:
    """Changes made after `track` become an upper dir: new and changed entries, whiteouts, opaque dirs."""
    lower, merged, upper = tmp_path / "lower", tmp_path / "merged", tmp_path / "upper"
    for d in (lower / "keep", lower / "swap", merged, upper):
        d.mkdir(parents=True)
    for name in ("keep/same", "keep/edit", "keep/gone", "swap/old"):
        (lower / name).write_text(name)
    copysnap.apply_layers([lower], merged)
    tracked = copysnap.track(merged)
    (merged / "keep" / "edit").open("a").write("+")
    (merged / "keep" / "gone").unlink()
    subprocess.run(["rm", "-r", str(merged / "swap")], check=True)
    (merged / "swap").mkdir()
    (merged / "swap" / "new").write_text("n")
    keep_mtime = os.stat(merged / "keep").st_mtime_ns
    copysnap.extract_changes(tracked, merged, upper)
    assert os.stat(upper / "keep").st_mtime_ns == keep_mtime  # as the step left it, not when changes moved out
    found = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
    assert (upper / "keep" / "edit").read_text() == "keep/edit+"
    assert os.stat(upper / "keep" / "gone").st_rdev == 0 and not (upper / "keep" / "gone").is_file()
    if os.path.lexists(upper / "swap" / "old"):
        # the new `swap` got the inode the old one freed (ext4 reuses it at once): it reads as the same dir
        # changed, so its old entry is a whiteout instead of the dir being opaque; the tree is the same
        assert found == ["keep", "keep/edit", "keep/gone", "swap", "swap/new", "swap/old"]
        assert os.stat(upper / "swap" / "old").st_rdev == 0 and not (upper / "swap" / "old").is_file()
    else:
        assert found == ["keep", "keep/edit", "keep/gone", "swap", "swap/new"]
        assert os.getxattr(upper / "swap", "trusted.overlay.opaque") == b"y"


def test_overlay_refused_switches_to_copy_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from workbench.snapshot import manager

    monkeypatch.delenv("WORKBENCH_SNAPSHOTTER", raising=False)
    monkeypatch.setattr(manager, "_chosen", [])
    monkeypatch.setattr(copysnap, "probe_overlay", lambda scratch: "Operation not permitted")
    line = manager.use_copy_if_overlay_fails(tmp_path)
    assert line == ("overlayfs cannot be mounted here (Operation not permitted): using the copying snapshotter, "
                    "about 1.3x slower (set WORKBENCH_SNAPSHOTTER=copy to choose it and skip this check)")
    assert manager.snapshotter() == "copy"
    monkeypatch.setenv("WORKBENCH_SNAPSHOTTER", "overlay")
    assert manager.snapshotter() == "overlay" and manager.use_copy_if_overlay_fails(tmp_path) is None


def test_probe_overlay_as_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    assert copysnap.probe_overlay(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.real
def test_copy_snapshotter_rootless_writes_the_layers_overlay_writes(registry: str, rootless_user: RootlessUser) -> None:
    """As an ordinary user (in its user namespace, owners kept through the subordinate ids)."""
    user = rootless_user
    ctx = user.mkdir("copy-snapshotter")
    for name in ("sub", "sub/d"):
        (ctx / name).mkdir()
        os.chown(ctx / name, user.uid, user.gid)
    user.write(ctx / "Dockerfile", DOCKERFILE.replace("sleep 0.5 && ", ""))
    user.write(ctx / "a.txt", "a\n")
    for name in ("keep.txt", "gone.txt", "d/inner"):
        user.write(ctx / "sub" / name, name)
    layers = {}
    for mode in ("overlay", "copy"):
        out = ctx.parent / f"copy-snapshotter-{mode}.tar"
        proc = user.run(["build", "--root", str(ctx.parent / f"copy-snapshotter-root-{mode}"), "--progress", "plain",
                         "--output", f"type=oci,dest={out}", str(ctx)],
                        env={"WORKBENCH_SNAPSHOTTER": mode, "WORKBENCH_SERVER": "0"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        layers[mode] = _layers(out)
    assert layers["copy"] == layers["overlay"]
    run = {e[0]: e for e in layers["copy"][-2]}
    assert run["data/sub/keep.txt"][2:5] == (0o600, 1000, 1000) and "data/other/.wh..wh..opq" in run


def test_layers_applied_leave_no_overlay_marks(tmp_path: Path) -> None:
    """Whiteouts and opaque dirs of upper layers act on the layers below and are not copied themselves, even in a
    dir the layers below do not have."""
    if os.geteuid() != 0:
        pytest.skip("trusted.overlay xattrs need root")
    bottom, top, dest = tmp_path / "bottom", tmp_path / "top", tmp_path / "dest"
    for d in (bottom / "o", top / "o", top / "new", dest):
        d.mkdir(parents=True)
    (bottom / "o" / "old").write_text("old")
    (bottom / "gone").write_text("gone")
    os.setxattr(top / "o", "trusted.overlay.opaque", b"y")
    (top / "o" / "fresh").write_text("fresh")
    os.mknod(top / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(top / "new" / "never", stat.S_IFCHR, os.makedev(0, 0))
    copysnap.apply_layers([top, bottom], dest)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["new", "o", "o/fresh"]
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "o")
