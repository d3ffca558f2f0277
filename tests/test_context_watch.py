"""The build server's memory of unchanged contexts: a checksum is reused only while inotify saw nothing
change, and every kind of change (content, touch, new dirs and files in them, renames, mounts, a
replaced context dir, a file changed through a link outside the context) makes the next build look again."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wb
from workbench.context_watch import ContextWatcher, mounts_of
from workbench.fsutil.patterns import IgnoreMatcher
from workbench.llb.ops import Copy
from workbench.server import _answer
from workbench.solver import checksum, context_memo

COPY_ALL = Copy(src_input=1, src="/", dest="/ctx")


def _ident(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    (root / "a" / "b" / "deep.txt").write_text("deep\n")
    return root


@pytest.fixture()
def watcher() -> Iterator[ContextWatcher]:
    w = ContextWatcher()
    yield w
    w.close()


def _remembered(w: ContextWatcher, ctx: Path, sig: str = "s") -> bool:
    """Store a value under the current generation, then ask again: is it handed back?"""
    generation, _ = w.lookup(str(ctx), _ident(ctx), sig)
    assert generation is not None
    w.store(str(ctx), sig, generation, "value")
    return w.lookup(str(ctx), _ident(ctx), sig)[1] == "value"


def _still_remembered(w: ContextWatcher, ctx: Path, sig: str = "s") -> bool:
    return w.lookup(str(ctx), _ident(ctx), sig)[1] == "value"


@pytest.mark.parametrize("change", [
    "write", "append_deep", "touch", "chmod", "new_file", "remove", "rename_inside", "symlink",
])
def test_any_change_below_the_context_forgets_what_was_remembered(
    watcher: ContextWatcher, ctx: Path, change: str
) -> None:
    assert _remembered(watcher, ctx)
    assert _still_remembered(watcher, ctx)  # nothing happened: still there
    deep = ctx / "a" / "b" / "deep.txt"
    if change == "write":
        (ctx / "top.txt").write_text("TOP\n")
    elif change == "append_deep":
        with open(deep, "a") as f:
            f.write("more\n")
    elif change == "touch":
        os.utime(deep)
    elif change == "chmod":
        deep.chmod(0o600)
    elif change == "new_file":
        (ctx / "a" / "new").write_text("")
    elif change == "remove":
        deep.unlink()
    elif change == "rename_inside":
        (ctx / "a" / "b").rename(ctx / "a" / "c")
    elif change == "symlink":
        (ctx / "a" / "link").symlink_to("b")
    assert not _still_remembered(watcher, ctx)
    assert _remembered(watcher, ctx)  # and the next value is kept again


def test_files_in_a_directory_made_after_watching_are_watched(watcher: ContextWatcher, ctx: Path) -> None:
    assert _remembered(watcher, ctx)
    (ctx / "later" / "inner").mkdir(parents=True)
    assert not _still_remembered(watcher, ctx)
    assert _remembered(watcher, ctx)
    (ctx / "later" / "inner" / "f").write_text("x")  # only a watch on the new dir can see this
    assert not _still_remembered(watcher, ctx)


def test_a_change_during_the_walk_is_not_stored(watcher: ContextWatcher, ctx: Path) -> None:
    generation, _ = watcher.lookup(str(ctx), _ident(ctx), "s")
    (ctx / "top.txt").write_text("changed while walking\n")
    watcher.store(str(ctx), "s", generation, "value")  # taken from a walk that may have missed the change
    assert watcher.lookup(str(ctx), _ident(ctx), "s")[1] is None


def test_a_replaced_context_directory_is_not_taken_for_the_old_one(watcher: ContextWatcher, ctx: Path) -> None:
    assert _remembered(watcher, ctx)
    ctx.parent.rename(ctx.parent.with_name(ctx.parent.name + "-old"))  # an ancestor moves: no event on ctx
    ctx.mkdir(parents=True)
    (ctx / "top.txt").write_text("other\n")
    assert not _still_remembered(watcher, ctx)


def test_a_mount_below_the_context_forgets_it(watcher: ContextWatcher, ctx: Path) -> None:
    assert _remembered(watcher, ctx)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(ctx / "a")], check=True)
    try:
        assert not _still_remembered(watcher, ctx)
    finally:
        subprocess.run(["umount", str(ctx / "a")], check=True)
    assert not _still_remembered(watcher, ctx)


def test_signatures_are_remembered_apart(watcher: ContextWatcher, ctx: Path) -> None:
    assert _remembered(watcher, ctx, "one")
    assert watcher.lookup(str(ctx), _ident(ctx), "two")[1] is None


def test_only_local_filesystems_are_watched(tmp_path: Path, watcher: ContextWatcher) -> None:
    where = mounts_of("/proc/self")
    assert where is not None and where[0] == "proc"
    assert watcher.lookup("/proc/self", _ident(Path("/proc/self")), "s") == (None, None)


def test_signature_covers_what_decides_the_checksum() -> None:
    sig = context_memo.signature
    assert sig(COPY_ALL, None) == sig(Copy(src_input=1, src="/", dest="/elsewhere"), None)  # dest is not read
    assert sig(COPY_ALL, None) != sig(Copy(src_input=1, src="/a", dest="/ctx"), None)
    assert sig(COPY_ALL, None) != sig(Copy(src_input=1, src="/", dest="/ctx", exclude_patterns=("*.md",)), None)
    assert sig(COPY_ALL, IgnoreMatcher(["a"]).excluded) != sig(COPY_ALL, IgnoreMatcher(["!a"]).excluded)
    assert sig(COPY_ALL, lambda path: False) is None  # arbitrary code: never remembered


@pytest.fixture()
def served() -> Iterator[ContextWatcher]:
    """A build's channel to a server loop (the server's own request handler, in a thread)."""
    ours, theirs = socket.socketpair()
    w = ContextWatcher()

    def serve() -> None:
        while _answer(ours, w):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    context_memo.attach(theirs)
    yield w
    context_memo.attach(None)
    theirs.close()
    thread.join(5)
    ours.close()
    w.close()


def _counting_walk(counter: list[int]) -> context_memo.Walk:
    def walk(context: Path, action: Copy, excluded: object) -> tuple[str, dict[str, str], bool]:
        counter.append(1)
        return checksum._walk_checksum(context, action, excluded)  # type: ignore[arg-type]
    return walk


def test_a_build_reuses_the_servers_checksum_until_the_context_changes(served: ContextWatcher, ctx: Path) -> None:
    walks: list[int] = []
    first = context_memo.checksum(ctx, COPY_ALL, None, _counting_walk(walks))
    again = context_memo.checksum(ctx, COPY_ALL, None, _counting_walk(walks))
    assert again == first and len(walks) == 1
    assert "a/b/deep.txt" in first[1]
    (ctx / "a" / "b" / "deep.txt").write_text("changed\n")
    changed = context_memo.checksum(ctx, COPY_ALL, None, _counting_walk(walks))
    assert len(walks) == 2 and changed[0] != first[0]
    assert changed[1]["a/b/deep.txt"] != first[1]["a/b/deep.txt"]


def test_a_file_with_a_link_outside_the_context_is_always_read(
    served: ContextWatcher, ctx: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("one\n")
    os.link(outside, ctx / "linked.txt")
    walks: list[int] = []
    first = context_memo.checksum(ctx, COPY_ALL, None, _counting_walk(walks))
    outside.write_text("two\n")  # reaches no watched directory
    second = context_memo.checksum(ctx, COPY_ALL, None, _counting_walk(walks))
    assert len(walks) == 2 and second[1]["linked.txt"] != first[1]["linked.txt"]


def test_without_a_server_every_checksum_walks(ctx: Path) -> None:
    walks: list[int] = []
    context_memo.checksum(ctx, COPY_ALL, None, _counting_walk(walks))
    context_memo.checksum(ctx, COPY_ALL, None, _counting_walk(walks))
    assert len(walks) == 2


def test_builds_through_the_server_see_every_change(registry: str, tmp_path: Path, root: Path) -> None:
    """Real builds through the build server: unchanged → cached; each change → the copy re-runs and the
    exported files are the new ones."""
    ctx = tmp_path / "bctx"
    (ctx / "d").mkdir(parents=True)
    (ctx / "d" / "f.txt").write_text("v1\n")
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY . /c\nRUN cat /c/d/f.txt > /seen\n")
    if os.environ.get("WORKBENCH_SERVER", "1") == "0":
        pytest.skip("this test is about builds through the build server")

    def build(n: int) -> tuple[str, str]:
        out = tmp_path / f"out{n}"
        proc = wb("-o", f"type=local,dest={out}", str(ctx), root=root)
        return proc.stderr, (out / "seen").read_text()

    log, seen = build(1)
    assert seen == "v1\n"
    log, seen = build(2)
    assert "CACHE MISS" not in log and seen == "v1\n", log
    (ctx / "d" / "f.txt").write_text("v2\n")
    log, seen = build(3)
    assert seen == "v2\n" and "d/f.txt changed" in log
    (ctx / "d" / "new").mkdir()
    (ctx / "d" / "new" / "g.txt").write_text("g\n")
    log, seen = build(4)
    assert "d/new" in log and "CACHE MISS" in log
    (ctx / "d" / "new" / "g.txt").write_text("g2\n")
    log, seen = build(5)
    assert "d/new/g.txt changed" in log, log


def test_a_context_too_large_to_watch_is_not_tried_again_for_a_while(
    watcher: ContextWatcher, ctx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench import context_watch

    monkeypatch.setattr(context_watch, "MAX_DIRS", 1)  # ctx has three directories
    tries: list[str] = []
    add_tree = ContextWatcher._add_tree

    def counting(self: ContextWatcher, c: object, top: str) -> bool:
        tries.append(top)
        return add_tree(self, c, top)  # type: ignore[arg-type]

    monkeypatch.setattr(ContextWatcher, "_add_tree", counting)
    assert watcher.lookup(str(ctx), _ident(ctx), "s") == (None, None)
    assert watcher.lookup(str(ctx), _ident(ctx), "s") == (None, None)
    assert tries == [str(ctx)]  # the server did not walk it a second time
