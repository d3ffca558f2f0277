"""The file browser (`f`) on real builds (Pilot): a finished step's filesystem as a lazy tree, a file's content,
a symlink's target, a binary file, the paused step's input at a breakpoint, and no mount left after closing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import Static
from textual.widgets.tree import TreeNode

from tests.tui_pilot import until as _until
from workbench.results import ViewError
from workbench.snapshot.scratch import mounts_under
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.files import CONTENT_LIMIT, FileNode, FilesScreen, FileTree, describe_content
from workbench.tui.source import LiveBuildSource
from workbench.tui.widgets.dag_view import DagView

DOCKERFILE = """\
FROM localhost:5055/busybox
COPY a.txt /data/a.txt
RUN echo one > /one && ln -s /data/a.txt /link && printf 'x\\0y' > /data/blob && mkdir /data/sub
"""


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def _child(node: TreeNode[FileNode], name: str) -> TreeNode[FileNode] | None:
    return next((c for c in node.children if c.data is not None and c.data.entry is not None
                 and c.data.entry.name == name), None)


def _names(node: TreeNode[FileNode]) -> set[str]:
    return {c.data.entry.name for c in node.children if c.data is not None and c.data.entry is not None}


def _content_on_screen(screen: FilesScreen) -> str:
    return str(screen.query_one("#files-content", Static).render())


def test_file_browser_shows_a_finished_step_and_the_paused_steps_input(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    root = tmp_path / "root"
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=root)

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(140, 40)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            assert app.model.finished is not None and app.model.finished.error == ""

            await pilot.press("home", "down")  # an internal step: no filesystem of its own to show
            await pilot.pause(0.05)
            assert "f" not in app.screen.active_bindings
            await pilot.press("end")  # the RUN step, the last node of the graph
            run_step = app.model.vertices[app.query_one(DagView).selected]
            assert "RUN echo one" in run_step.name
            await pilot.pause(0.05)
            assert "f" in app.screen.active_bindings  # offered in the footer for a finished step
            await pilot.press("f")
            await _until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.root is not None)
            screen = app.screen
            assert isinstance(screen, FilesScreen)
            assert mounts_under(root / "tmp"), "the step's layers are seen through a read-only overlay"
            tree = screen.query_one(FileTree)
            await _until(pilot, lambda: _child(tree.root, "one") is not None)
            assert {"bin", "data", "etc", "one", "link"} <= _names(tree.root)
            link = _child(tree.root, "link")
            assert link is not None and "link -> /data/a.txt" in str(link.label)
            one = _child(tree.root, "one")
            assert one is not None and "-rw-r--r-- 4" in str(one.label)

            # a directory opens on enter: its entries load then
            data = _child(tree.root, "data")
            assert data is not None and data.allow_expand and not data.children
            tree.move_cursor(data)
            await pilot.press("enter")
            await _until(pilot, lambda: _child(data, "a.txt") is not None)
            assert _names(data) == {"a.txt", "blob", "sub"}
            sub = _child(data, "sub")
            assert sub is not None and str(sub.label).startswith("sub/")

            # a file shows beside the tree
            tree.move_cursor(one)
            await pilot.press("enter")
            await _until(pilot, lambda: screen.shown_path == "/one" and screen.shown_text == "one\n")
            assert "one" in _content_on_screen(screen)
            tree.move_cursor(link)
            await pilot.press("enter")
            await _until(pilot, lambda: screen.shown_path == "/link" and screen.shown_text == "alpha\n")
            blob = _child(data, "blob")
            assert blob is not None
            tree.move_cursor(blob)
            await pilot.press("enter")
            await _until(pilot, lambda: screen.shown_path == "/data/blob" and "binary file" in screen.shown_text)
            assert "/data/blob: binary file, 3 bytes" in _content_on_screen(screen)

            await pilot.press("escape")
            await _until(pilot, lambda: not isinstance(app.screen, FilesScreen), 5)
            assert mounts_under(root / "tmp") == []

            # at a pause, with the paused step selected: what the step starts from (no /one yet)
            await pilot.press("b", "r")  # a breakpoint at the selected RUN step's line, and a rerun
            await _until(pilot, lambda: app.pause is not None)
            await pilot.press("f")
            await _until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.root is not None)
            screen = app.screen
            assert isinstance(screen, FilesScreen) and screen.title_text.startswith("the input of [3/3] RUN")
            tree = screen.query_one(FileTree)
            await _until(pilot, lambda: _child(tree.root, "data") is not None)
            assert "one" not in _names(tree.root) and "link" not in _names(tree.root)
            await pilot.press("escape")
            await _until(pilot, lambda: not isinstance(app.screen, FilesScreen), 5)
            assert mounts_under(root / "tmp") == []

            await pilot.press("c")
            await _until(pilot, lambda: app.model.finished is not None and app.generation == 2)
            assert app.model.finished is not None and app.model.finished.error == ""

            # the app ends with the browser open (ctrl+q): the view is released all the same
            await pilot.press("f")
            await _until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.root is not None)
            assert mounts_under(root / "tmp")
            await pilot.press("ctrl+q")
        deadline = time.monotonic() + 5  # the view's worker lets go within moments of the app's end
        while mounts_under(root / "tmp") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mounts_under(root / "tmp") == []

    asyncio.run(run())


def test_content_pane_text_binary_and_size_limit() -> None:
    assert describe_content("/a", b"hello\n", 6) == "hello\n"
    assert describe_content("/b", b"\x7fELF\x00\x01", 70_000) == "/b: binary file, 70,000 bytes (not shown)"
    long = describe_content("/c", b"x" * (CONTENT_LIMIT + 1), 100_000)
    assert long.startswith("x" * CONTENT_LIMIT) and long.endswith("(the first 64 kB of 100,000 bytes shown)")


def test_views_of_steps_that_are_gone_say_so(tmp_path: Path) -> None:
    root = tmp_path / "root"
    source = LiveBuildSource(context=tmp_path, dockerfile=tmp_path / "Dockerfile", root=root)
    with pytest.raises(ViewError, match="no longer in the cache"):
        with source.result_engine().step_view(source.root, "sha256:" + "0" * 64):
            pass
    with pytest.raises(ViewError, match="snapshot 0123abcd is gone"):
        with source.result_engine().chain_view(source.root, ["0123abcd"]):
            pass
    assert not list((root / "tmp").iterdir())  # the snapshot manager opened for the view cleaned up after itself
