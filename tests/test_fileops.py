"""COPY semantics on real directories (no container needed)."""

import os
from pathlib import Path

import pytest

from workbench.fsutil.paths import resolve_in_root
from workbench.llb.ops import Copy, Mkdir, Rm
from workbench.solver import fileops


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    (c / "dir" / "sub").mkdir(parents=True)
    (c / "a.txt").write_text("A\n")
    (c / "b.md").write_text("B\n")
    (c / "c.md").write_text("C\n")
    (c / "dir" / "one").write_text("1\n")
    (c / "dir" / "sub" / "deep.txt").write_text("deep\n")
    os.chmod(c / "a.txt", 0o640)
    return c


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nu:x:1000:1001::/home/u:/bin/sh\n")
    (r / "etc" / "group").write_text("root:x:0:\ng:x:1001:\n")
    return r


def test_copy_file_into_dir_keeps_mode(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "a.txt", "/dst/", dest_is_dir=True), reset_owner=True)
    assert (root / "dst" / "a.txt").read_text() == "A\n"
    assert (root / "dst").stat().st_mode & 0o777 == 0o755
    assert (root / "dst" / "a.txt").stat().st_mode & 0o777 == 0o640


def test_copy_dir_copies_contents_and_glob(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "dir", "/dir2"))
    assert (root / "dir2" / "one").read_text() == "1\n"
    assert (root / "dir2" / "sub" / "deep.txt").read_text() == "deep\n"
    fileops.copy(ctx, root, Copy(1, "*.md", "/glob/", dest_is_dir=True))
    assert sorted(os.listdir(root / "glob")) == ["b.md", "c.md"]
    fileops.copy(ctx, root, Copy(1, "dir/sub/deep.txt", "/renamed.txt"))
    assert (root / "renamed.txt").read_text() == "deep\n"


def test_copy_chown_by_name_and_chmod(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "a.txt", "/owned/", owner="u:g", mode=0o600, dest_is_dir=True))
    st = (root / "owned" / "a.txt").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1001, 0o600)
    assert (root / "owned").stat().st_uid == 1000


def test_missing_source_names_the_path(ctx: Path, root: Path) -> None:
    with pytest.raises(fileops.FileActionError, match="does-not-exist"):
        fileops.copy(ctx, root, Copy(1, "does-not-exist", "/x"))


def test_excluded_files_are_not_copied(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, ".", "/ctx"), excluded=lambda p: p.endswith(".md"))
    assert (root / "ctx" / "a.txt").exists()
    assert not (root / "ctx" / "b.md").exists()


def test_symlinks_resolve_inside_root(root: Path, tmp_path: Path) -> None:
    os.symlink("/", root / "escape")
    os.symlink("../../..", root / "up")
    assert resolve_in_root(root, "/escape/etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/up/etc") == root / "etc"
    fileops.mkdir(root, Mkdir("/escape/made", 0o755, True))
    assert (root / "made").is_dir()
    assert not Path("/made").exists()


def test_rm_missing_allowed(root: Path) -> None:
    fileops.rm(root, Rm("/nope", allow_not_found=True))
    with pytest.raises(fileops.FileActionError):
        fileops.rm(root, Rm("/nope"))
