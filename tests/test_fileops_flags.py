"""COPY/ADD flags on real directories: symbolic --chmod, --exclude, --parents, ADD archive extraction, cache keys."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from workbench.fsutil.patterns import IgnoreMatcher
from workbench.llb.ops import Copy
from workbench.solver import checksum, fileops
from workbench.solver.fileops import FileActionError, parse_chmod


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _tree(root: Path) -> list[str]:
    """Every path below `root`, relative, dirs with a trailing slash."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out.append(os.path.normpath(os.path.join(rel, d)) + "/")
        for f in filenames:
            out.append(os.path.normpath(os.path.join(rel, f)))
    return sorted(out)


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    for d in ("dir/sub", "src/app/internal", "src/docs", "x/y", "dir1", "dir3"):
        (c / d).mkdir(parents=True)
    files = {
        "a.txt": "A", "b.md": "B", "c.md": "C", "dir/one": "1", "dir/sub/deep.txt": "deep", "dir/sub/other.log": "log",
        "src/main.go": "main", "src/app/app.go": "app", "src/app/app_test.go": "test", "src/app/README": "readme",
        "src/app/internal/x.go": "x", "src/docs/guide.md": "guide", "x/y/z.txt": "z", "x/y/w.txt": "w",
        "x/top.txt": "top", "dir1/file-101.png": "2", "dir1/file-102.txt": "3", "dir3/file-301.mp3": "9",
        "dir3/file-302.mpeg": "10",
    }
    for name, text in files.items():
        (c / name).write_text(text)
    os.chmod(c / "a.txt", 0o640)
    os.chmod(c / "x", 0o750)
    os.chmod(c / "x" / "y", 0o711)
    return c


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nu:x:1000:1001::/home/u:/bin/sh\n")
    (r / "etc" / "group").write_text("root:x:0:\ng:x:1001:\n")
    return r


# --- symbolic --chmod -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "before", "is_dir", "after"),
    [
        ("u+x", 0o640, False, 0o740),
        ("g-w,o=", 0o664, False, 0o640),
        ("a-w", 0o666, False, 0o444),
        ("+x", 0o640, False, 0o751),  # no who: all classes (buildkitd's umask is 0)
        ("a+rX", 0o600, False, 0o644),  # X: no x bit on a file, none added
        ("a+rX", 0o700, False, 0o755),
        ("a+rX", 0o700, True, 0o755),
        ("+X", 0o600, True, 0o711),  # X always applies to a dir
        ("a=rX", 0o755, False, 0o444),  # BSD setmode: X counts only with +
        ("a=rX", 0o700, True, 0o444),
        ("u=rwx,go=u-w", 0o600, False, 0o755),  # copy the user class, then clear w
        ("u=g", 0o640, False, 0o440),
        ("u+r-w", 0o200, False, 0o400),  # several operators in one clause
        ("ug=rw,o=r", 0o700, False, 0o664),
        ("go=", 0o777, False, 0o700),
        ("u+s,g+s", 0o755, False, 0o6755),
        ("o+s", 0o755, False, 0o755),  # set-id for others alone is ignored
        ("+t", 0o755, True, 0o1755),
        ("o+t", 0o755, True, 0o755),
        ("=", 0o755, False, 0o000),
        ("644", 0o777, True, 0o644),  # an octal string is accepted too
        ("4755", 0o600, False, 0o4755),
    ],
)
def test_parse_chmod_forms(text: str, before: int, is_dir: bool, after: int) -> None:
    assert parse_chmod(text).apply(before, is_dir) == after


@pytest.mark.parametrize("text", ["=644", "u+q", "u", "ug", "u+x,", "u+x,,g-w", "0o755", "8", "17777", "x+u",
                                  "a=r,9", "+x y", "u+x;g+w"])
def test_parse_chmod_rejects_invalid(text: str) -> None:
    with pytest.raises(FileActionError, match="invalid chmod parameter"):
        parse_chmod(text)


def test_copy_applies_mode_str_to_each_path_own_mode(ctx: Path, root: Path) -> None:
    os.chmod(ctx / "dir" / "one", 0o600)
    os.chmod(ctx / "dir" / "sub", 0o700)
    os.symlink("one", ctx / "dir" / "link")
    fileops.copy(ctx, root, Copy(1, "dir", "/out", mode_str="go+rX"))
    assert _mode(root / "out" / "one") == 0o644
    assert _mode(root / "out" / "sub") == 0o755
    assert _mode(root / "out" / "sub" / "deep.txt") == 0o644
    assert os.readlink(root / "out" / "link") == "one"
    assert _mode(root / "out") == 0o755  # the dest dir made for the contents is not a copied path
    fileops.copy(ctx, root, Copy(1, "a.txt", "/f/", mode_str="u+x,g-r", dest_is_dir=True))
    assert _mode(root / "f" / "a.txt") == 0o700


def test_mode_int_wins_over_mode_str(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "a.txt", "/f/", mode=0o600, mode_str="a+rwx", dest_is_dir=True))
    assert _mode(root / "f" / "a.txt") == 0o600


def test_invalid_mode_str_fails_the_copy(ctx: Path, root: Path) -> None:
    with pytest.raises(FileActionError, match="'u\\+q'"):
        fileops.copy(ctx, root, Copy(1, "a.txt", "/f/", mode_str="u+q", dest_is_dir=True))
    assert not (root / "f").exists()


# --- --exclude ------------------------------------------------------------------------------------------------


def _copy_dir(ctx: Path, root: Path, *excludes: str, src: str = ".", dest: str = "/out") -> list[str]:
    fileops.copy(ctx, root, Copy(1, src, dest, exclude_patterns=excludes))
    return _tree(root / dest.lstrip("/"))


def test_exclude_files_by_glob(ctx: Path, root: Path) -> None:
    got = _copy_dir(ctx, root, "*.md", src="/")
    assert "a.txt" in got and "b.md" not in got and "c.md" not in got
    assert "src/docs/guide.md" in got  # `*` stays in one directory level


def test_exclude_dir_skips_it_whole(ctx: Path, root: Path) -> None:
    got = _copy_dir(ctx, root, "dir/sub", src=".")
    assert "dir/one" in got and "dir/" in got
    assert not any(p.startswith("dir/sub") for p in got)


def test_exclude_double_star_and_nested_globs(ctx: Path, root: Path) -> None:
    got = _copy_dir(ctx, root, "**/*.go", "*/*.png")
    assert not any(p.endswith(".go") for p in got)
    assert "src/app/README" in got and "src/app/internal/" in got
    assert "dir1/file-101.png" not in got and "dir1/file-102.txt" in got


def test_exclude_negation_reincludes_below_an_excluded_dir(ctx: Path, root: Path) -> None:
    got = _copy_dir(ctx, root, "dir", "!dir/sub/deep.txt")
    assert "dir/sub/deep.txt" in got
    assert "dir/one" not in got and "dir/sub/other.log" not in got
    got2 = _copy_dir(ctx, root, "*.md", "!b.md", dest="/out2")
    assert "b.md" in got2 and "c.md" not in got2


def test_exclude_patterns_are_relative_to_the_source(ctx: Path, root: Path) -> None:
    got = _copy_dir(ctx, root, "sub", src="dir")
    assert got == ["one"]
    got = _copy_dir(ctx, root, "dir/sub", src="dir", dest="/out2")  # not relative to the context
    assert "sub/deep.txt" in got


def test_exclude_with_glob_sources(ctx: Path, root: Path) -> None:
    # A matched file is checked as the glob's base sees it; a matched dir is filtered inside (BuildKit's
    # dir* test: each dir's contents are matched relative to that dir).
    fileops.copy(ctx, root, Copy(1, "*.md", "/g/", exclude_patterns=("c.md",), dest_is_dir=True))
    assert _tree(root / "g") == ["b.md"]
    fileops.copy(ctx, root, Copy(1, "dir*", "/d/", exclude_patterns=("*.mp3", "*.png", "*.txt"), dest_is_dir=True))
    assert _tree(root / "d") == ["file-302.mpeg", "one", "sub/", "sub/deep.txt", "sub/other.log"]
    fileops.copy(ctx, root, Copy(1, "dir*", "/e/", exclude_patterns=("*",), dest_is_dir=True))
    assert _tree(root / "e") == []  # everything excluded: the dest dir exists, empty, no error


def test_exclude_combines_with_dockerignore(ctx: Path, root: Path) -> None:
    ignore = IgnoreMatcher(["src/docs"])
    fileops.copy(ctx, root, Copy(1, "src", "/s", exclude_patterns=("**/*_test.go",)), excluded=ignore.excluded)
    assert _tree(root / "s") == ["app/", "app/README", "app/app.go", "app/internal/", "app/internal/x.go", "main.go"]


# --- --parents ------------------------------------------------------------------------------------------------


def test_parents_without_pivot_keeps_the_whole_path(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "x/y/z.txt", "/dst/", parents=True, dest_is_dir=True))
    assert _tree(root / "dst") == ["x/", "x/y/", "x/y/z.txt"]
    assert _mode(root / "dst" / "x") == 0o750 and _mode(root / "dst" / "x" / "y") == 0o711  # kept dirs as in src


def test_parents_pivot_marks_where_the_kept_part_starts(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "./x/./y/z.txt", "/dst/", parents=True, dest_is_dir=True))
    assert _tree(root / "dst") == ["y/", "y/z.txt"]
    fileops.copy(ctx, root, Copy(1, "x/./y", "/dir", parents=True))
    assert _tree(root / "dir") == ["y/", "y/w.txt", "y/z.txt"]  # a matched dir brings its contents


def test_parents_with_globs_match_nested_paths(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "**/*.go", "/dst/", parents=True, dest_is_dir=True))
    assert _tree(root / "dst") == ["src/", "src/app/", "src/app/app.go", "src/app/app_test.go", "src/app/internal/",
                                   "src/app/internal/x.go", "src/main.go"]  # no src/docs: nothing matched there
    fileops.copy(ctx, root, Copy(1, "src/./**/*.go", "/p/", parents=True, exclude_patterns=("**/*_test.go",)))
    assert _tree(root / "p") == ["app/", "app/app.go", "app/internal/", "app/internal/x.go", "main.go"]
    fileops.copy(ctx, root, Copy(1, "./*/y/*.txt", "/q/", parents=True))
    assert _tree(root / "q") == ["x/", "x/y/", "x/y/w.txt", "x/y/z.txt"]


def test_parents_edge_forms(ctx: Path, root: Path) -> None:
    fileops.copy(ctx, root, Copy(1, "./a.txt", "/top/", parents=True))
    assert _tree(root / "top") == ["a.txt"]
    fileops.copy(ctx, root, Copy(1, "x/./", "/all/", parents=True))  # empty pattern: the whole pivot dir
    assert _tree(root / "all") == ["top.txt", "y/", "y/w.txt", "y/z.txt"]
    with pytest.raises(FileActionError, match="not a directory"):
        fileops.copy(ctx, root, Copy(1, "a.txt/./b", "/bad/", parents=True))


def test_parents_missing_sources(ctx: Path, root: Path) -> None:
    with pytest.raises(FileActionError, match="x/y/nope.txt"):
        fileops.copy(ctx, root, Copy(1, "x/./y/nope.txt", "/dst/", parents=True))
    with pytest.raises(FileActionError, match="no source files"):
        fileops.copy(ctx, root, Copy(1, "**/*.rs", "/dst/", parents=True))
    fileops.copy(ctx, root, Copy(1, "**/*.rs", "/empty/", parents=True, allow_empty_wildcard=True))
    assert _tree(root / "empty") == []


def test_parents_respects_dockerignore_and_chmod(ctx: Path, root: Path) -> None:
    ignore = IgnoreMatcher(["src/app/internal"])
    fileops.copy(ctx, root, Copy(1, "src/**/*.go", "/d/", parents=True, mode_str="a+rX"), excluded=ignore.excluded)
    assert "src/app/internal/x.go" not in _tree(root / "d")
    assert _mode(root / "d" / "src" / "app") == 0o755


# --- ADD: archive extraction ----------------------------------------------------------------------------------


def _tar_bytes(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    ti.mode = int(kw.pop("mode", 0o644))  # type: ignore[call-overload]
    for key, value in kw.items():
        setattr(ti, key, value)
    tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _sample(tar: tarfile.TarFile) -> None:
    _add(tar, "app/", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1001, mtime=1_000_000)
    _add(tar, "app/run.sh", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1001, mtime=1_234_567)
    _add(tar, "app/link", tarfile.SYMTYPE, linkname="run.sh", uid=7, gid=8, mtime=1_111_111)
    _add(tar, "app/hard", tarfile.LNKTYPE, linkname="app/run.sh", mode=0o4755, uid=1000, gid=1001, mtime=1_234_567)
    _add(tar, "/abs.txt", data=b"abs", mtime=2_000_000)
    _add(tar, ".wh.keep", data=b"not a whiteout")


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "tar": lambda b: b,
    "gzip": lambda b: gzip.compress(b),
    "bzip2": lambda b: bz2.compress(b),
    "xz": lambda b: lzma.compress(b),
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_unpack_archives_detected_by_content(kind: str, ctx: Path, root: Path) -> None:
    (ctx / "archive.bin").write_bytes(COMPRESSORS[kind](_tar_bytes(_sample)))  # the name says nothing
    (root / "opt").mkdir()
    (root / "opt" / "keep").write_text("kept")
    fileops.copy(ctx, root, Copy(1, "archive.bin", "/opt", attempt_unpack=True), reset_owner=True)
    out = root / "opt"
    assert _tree(out) == [".wh.keep", "abs.txt", "app/", "app/hard", "app/link", "app/run.sh", "keep"]
    run = os.lstat(out / "app" / "run.sh")
    assert (run.st_uid, run.st_gid, stat.S_IMODE(run.st_mode), int(run.st_mtime)) == (1000, 1001, 0o4755, 1_234_567)
    assert (out / "app" / "run.sh").read_bytes() == b"#!/bin/sh\n"
    assert os.lstat(out / "app" / "hard").st_ino == run.st_ino
    link = os.lstat(out / "app" / "link")
    assert os.readlink(out / "app" / "link") == "run.sh" and (link.st_uid, link.st_gid) == (7, 8)
    d = os.lstat(out / "app")
    assert (stat.S_IMODE(d.st_mode), d.st_uid, int(d.st_mtime)) == (0o750, 1000, 1_000_000)
    assert (out / ".wh.keep").read_bytes() == b"not a whiteout" and (out / "keep").read_text() == "kept"


def test_unpack_chown_overrides_archive_owner(ctx: Path, root: Path) -> None:
    (ctx / "a.tgz").write_bytes(gzip.compress(_tar_bytes(_sample)))
    fileops.copy(ctx, root, Copy(1, "a.tgz", "/o/", owner="u:g", mode_str="a+w", attempt_unpack=True))
    st = os.lstat(root / "o" / "app" / "run.sh")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o4755)  # --chmod: not on extraction


def test_non_tar_files_are_copied_as_they_are(ctx: Path, root: Path) -> None:
    gz = gzip.compress(b"just text, not a tar\n" * 50)
    (ctx / "notes.txt.gz").write_bytes(gz)
    (ctx / "fake.tar").write_bytes(b"\0" * 1024)
    fileops.copy(ctx, root, Copy(1, "notes.txt.gz", "/d/", attempt_unpack=True, dest_is_dir=True))
    fileops.copy(ctx, root, Copy(1, "fake.tar", "/d/", attempt_unpack=True, dest_is_dir=True))
    fileops.copy(ctx, root, Copy(1, "a.txt", "/d/", attempt_unpack=True, dest_is_dir=True))
    assert (root / "d" / "notes.txt.gz").read_bytes() == gz  # not decompressed either
    assert (root / "d" / "fake.tar").read_bytes() == b"\0" * 1024
    assert (root / "d" / "a.txt").read_text() == "A"


def test_archive_without_attempt_unpack_is_copied(ctx: Path, root: Path) -> None:
    data = _tar_bytes(_sample)
    (ctx / "a.tar").write_bytes(data)
    fileops.copy(ctx, root, Copy(1, "a.tar", "/d/", dest_is_dir=True))
    assert (root / "d" / "a.tar").read_bytes() == data


def _outside_untouched(tmp_path: Path) -> None:
    assert (tmp_path / "secret").read_text() == "secret"
    assert sorted(os.listdir(tmp_path)) == ["ctx", "root", "secret"]


def test_hostile_archive_dotdot_is_refused(ctx: Path, root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret")
    (ctx / "evil.tar").write_bytes(_tar_bytes(lambda t: (_add(t, "ok.txt", data=b"ok"),
                                                         _add(t, "a/../../../../secret", data=b"pwned"))))
    with pytest.raises(FileActionError, match="outside extraction root"):
        fileops.copy(ctx, root, Copy(1, "evil.tar", "/x", attempt_unpack=True))
    _outside_untouched(tmp_path)


def test_hostile_archive_symlinks_stay_inside(ctx: Path, root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret")
    host_passwd = Path("/etc/passwd").read_bytes()

    def build(t: tarfile.TarFile) -> None:
        _add(t, "abs", tarfile.SYMTYPE, linkname="/etc")
        _add(t, "abs/passwd", data=b"pwned")  # written through an absolute symlink
        _add(t, "up", tarfile.SYMTYPE, linkname="../../../../..")
        _add(t, "up/secret", data=b"pwned")  # through a relative one climbing out
        _add(t, "deep/", tarfile.DIRTYPE, mode=0o755)
        _add(t, "deep/esc", tarfile.SYMTYPE, linkname=str(tmp_path))
        _add(t, "deep/esc/secret", data=b"pwned")

    (ctx / "evil.tar").write_bytes(_tar_bytes(build))
    fileops.copy(ctx, root, Copy(1, "evil.tar", "/x", attempt_unpack=True))
    x = root / "x"
    assert (x / "etc" / "passwd").read_bytes() == b"pwned"  # taken from the extraction dir, as BuildKit does
    assert (x / "secret").read_bytes() == b"pwned"
    assert (x / str(tmp_path).lstrip("/") / "secret").read_bytes() == b"pwned"
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0")
    assert Path("/etc/passwd").read_bytes() == host_passwd
    _outside_untouched(tmp_path)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../etc/passwd", "abs/passwd"])
def test_hostile_archive_hardlinks_out_are_refused(target: str, ctx: Path, root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret")
    nlink = os.stat("/etc/passwd").st_nlink

    def build(t: tarfile.TarFile) -> None:
        _add(t, "abs", tarfile.SYMTYPE, linkname="/etc")
        _add(t, "pw", tarfile.LNKTYPE, linkname=target)
        _add(t, "pw", data=b"pwned")  # had the link worked, this would write through it

    (ctx / "evil.tar").write_bytes(_tar_bytes(build))
    with pytest.raises(FileActionError, match="hard link|outside extraction root|symlink"):
        fileops.copy(ctx, root, Copy(1, "evil.tar", "/x", attempt_unpack=True))  # /etc/passwd: /x/etc/passwd
    assert os.stat("/etc/passwd").st_nlink == nlink
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0")
    assert os.stat(root / "etc" / "passwd").st_nlink == 1
    _outside_untouched(tmp_path)


def test_hardlink_inside_archive_replaced_member_does_not_leak(ctx: Path, root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret")

    def build(t: tarfile.TarFile) -> None:
        _add(t, "f", data=b"inside")
        _add(t, "l", tarfile.LNKTYPE, linkname="f")
        _add(t, "l", tarfile.SYMTYPE, linkname=str(tmp_path / "secret"))  # replaces the link, not its target
        _add(t, "l", data=b"through?")

    (ctx / "a.tar").write_bytes(_tar_bytes(build))
    fileops.copy(ctx, root, Copy(1, "a.tar", "/x", attempt_unpack=True))
    assert (root / "x" / "f").read_bytes() == b"inside" and (root / "x" / "l").read_bytes() == b"through?"
    _outside_untouched(tmp_path)


# --- cache keys -----------------------------------------------------------------------------------------------


def _key(ctx: Path, action: Copy, ignore: list[str] | None = None) -> tuple[str, dict[str, str]]:
    return checksum.copy_checksum(ctx, action, IgnoreMatcher(ignore).excluded if ignore else None)


def test_checksum_ignores_excluded_changes(ctx: Path) -> None:
    action = Copy(1, ".", "/out", exclude_patterns=("**/*.md", "dir/sub"))
    before, files = _key(ctx, action)
    assert "b.md" not in files and "dir/sub/deep.txt" not in files and "dir/one" in files
    (ctx / "b.md").write_text("changed")
    (ctx / "src" / "docs" / "guide.md").write_text("changed")
    (ctx / "dir" / "sub" / "deep.txt").write_text("changed")
    (ctx / "dir" / "sub" / "new").write_text("new")
    assert _key(ctx, action)[0] == before
    (ctx / "dir" / "one").write_text("changed")
    assert _key(ctx, action)[0] != before


def test_checksum_negation_and_glob_sources(ctx: Path) -> None:
    action = Copy(1, "dir", "/out", exclude_patterns=("sub", "!sub/deep.txt"))
    before, _ = _key(ctx, action)
    (ctx / "dir" / "sub" / "other.log").write_text("changed")
    assert _key(ctx, action)[0] == before
    (ctx / "dir" / "sub" / "deep.txt").write_text("changed")
    assert _key(ctx, action)[0] != before
    glob = Copy(1, "*.md", "/g/", exclude_patterns=("c.md",))
    before, _ = _key(ctx, glob)
    (ctx / "c.md").write_text("changed")
    assert _key(ctx, glob)[0] == before
    (ctx / "b.md").write_text("changed")
    assert _key(ctx, glob)[0] != before


def test_checksum_parents(ctx: Path) -> None:
    action = Copy(1, "src/./**/*.go", "/p/", parents=True)
    before, files = _key(ctx, action)
    assert "src/app" in files and "src/app/app.go" in files and "src/docs" not in files
    (ctx / "src" / "app" / "README").write_text("changed")
    (ctx / "src" / "docs" / "guide.md").write_text("changed")
    assert _key(ctx, action)[0] == before
    (ctx / "src" / "app" / "internal" / "x.go").write_text("changed")
    after = _key(ctx, action)[0]
    assert after != before
    os.chmod(ctx / "src" / "app", 0o700)  # a kept parent dir is part of the result
    assert _key(ctx, action)[0] != after
    with pytest.raises(FileActionError, match="not found"):
        _key(ctx, Copy(1, "x/./nope", "/p/", parents=True))


def test_checksum_dockerignore_still_applies(ctx: Path) -> None:
    action = Copy(1, ".", "/out", exclude_patterns=("*.md",))
    before, files = _key(ctx, action, ["dir"])
    assert not any(f.startswith("dir/") for f in files)
    (ctx / "dir" / "one").write_text("changed")
    assert _key(ctx, action, ["dir"])[0] == before
