"""Any step, any time (issue 18, item 7), on real builds (Pilot, tmux): after the build a cached step shows its
snapshot, its files and its last run's log (from the build history); `d` compares two steps, or one step across
two builds; `e` opens a shell in a finished step's filesystem and leaves nothing mounted or running; at
break-on-error the browser and the diff show the filesystem the failed step left."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from textual.widgets.tree import TreeNode

from tests.conftest import runc_containers
from tests.test_tui_debug_tmux import _assert_nothing_left, _clean_after_kill, _shell_prompt, _start_app, _stop_reapers
from tests.test_tui_tmux import _tmux, _wait_pane
from tests.tui_pilot import until as _until
from workbench.cache.store import CacheStore
from workbench.history.store import list_sessions
from workbench.progress.trace import CACHED, DONE
from workbench.snapshot.scratch import mounts_under
from workbench.tui.app import WorkbenchApp
from workbench.tui.model import VertexState
from workbench.tui.screens.diff import DiffScreen
from workbench.tui.screens.files import FileNode, FilesScreen, FileTree
from workbench.tui.source import LiveBuildSource
from workbench.tui.widgets.cache_panel import CachePanel
from workbench.tui.widgets.dag_view import DagView
from workbench.tui.widgets.log_pane import LogPane
from workbench.tui.widgets.log_view import LogView

DOCKERFILE = """\
FROM localhost:5055/busybox
COPY a.txt /app/a.txt
RUN echo ran > /made && echo built-line-1 && echo built-line-2
"""


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def _project(tmp_path: Path, dockerfile: str = DOCKERFILE) -> LiveBuildSource:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "Dockerfile").write_text(dockerfile)
    return LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")


def _step(app: WorkbenchApp, text: str) -> VertexState:
    return next(v for v in app.model.vertices.values() if text in v.name)


def _names(node: TreeNode[FileNode]) -> set[str]:
    return {c.data.entry.name for c in node.children if c.data is not None and c.data.entry is not None}


async def _select(pilot: object, app: WorkbenchApp, v: VertexState) -> None:
    app.query_one(DagView).select(v.id)
    await _until(pilot, lambda: app.query_one(DagView).selected == v.id)
    await pilot.pause(0.05)  # type: ignore[attr-defined]


async def _rebuilt(pilot: object, app: WorkbenchApp, generation: int) -> None:
    await pilot.press("r")  # type: ignore[attr-defined]
    await _until(pilot, lambda: app.generation == generation and app.model.finished is not None)
    assert app.model.finished is not None and app.model.finished.error == ""


def test_a_cached_step_shows_its_snapshot_files_and_last_run(registry: str, tmp_path: Path) -> None:
    source = _project(tmp_path)
    root = source.root

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(160, 45)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            await _rebuilt(pilot, app, 2)  # every step from the cache now
            copy, run_step = _step(app, "COPY a.txt"), _step(app, "RUN echo ran")
            assert copy.state == run_step.state == CACHED
            assert copy.snapshot == ""  # below the cached RUN: the solver never looked its result up

            # the cache panel: the snapshot the store keeps for the step's key, and its size
            await _select(pilot, app, copy)
            await pilot.press("3")
            store = CacheStore(root / "cache.db")
            chain = store.lookup(copy.cache_key)
            store.close()
            assert chain
            panel = app.query_one(CachePanel)
            await _until(pilot, lambda: re.search(rf"snapshot\[/\] {re.escape(chain[-1])} \(\d+(\.\d)? k?B\)",
                                                  panel._shown) is not None, 30)
            assert "snapshot[/] none" not in panel._shown

            # `f` on the cached step: its files
            await pilot.press("escape", "f")
            await _until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.root is not None)
            tree = app.screen.query_one(FileTree)
            await _until(pilot, lambda: "app" in _names(tree.root))
            assert "made" not in _names(tree.root)  # the RUN after it wrote that
            await pilot.press("escape")
            await _until(pilot, lambda: not isinstance(app.screen, FilesScreen), 5)

            # the logs pane: the cached RUN's lines from its last run, and which build that was
            first = list_sessions(root / "history")[-1]  # the oldest record: build 1, where the RUN ran
            await _select(pilot, app, run_step)
            await pilot.press("2")
            pane = app.query_one(LogPane)
            title = pane.query_one("#log-title")
            await _until(pilot, lambda: f"from build {first.id} at " in getattr(title, "_wb_text", ""), 30)
            assert "cached; its last run's 2 lines" in title._wb_text  # type: ignore[attr-defined]
            view = pane.query_one(LogView)
            assert [view.source.line(i) for i in range(len(view.source))] == ["built-line-1", "built-line-2"]
            await pilot.press("q")
        assert mounts_under(root / "tmp") == []

    asyncio.run(run())


def test_diff_after_the_build_and_the_same_step_across_builds(registry: str, tmp_path: Path) -> None:
    source = _project(tmp_path)

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(160, 45)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            assert app.pause is None
            await _select(pilot, app, _step(app, "RUN echo ran"))
            assert "d" in app.screen.active_bindings and "e" in app.screen.active_bindings  # in the footer
            await pilot.press("d")  # the step before the RUN → the RUN
            await _until(pilot, lambda: isinstance(app.screen, DiffScreen) and bool(app.screen.lines))
            screen = app.screen
            assert isinstance(screen, DiffScreen)
            assert screen.lines == ["A /made (4 B)"], screen.lines
            await pilot.press("escape")
            await _until(pilot, lambda: not isinstance(app.screen, DiffScreen), 5)

            # "what did my edit change in /app?": the COPY of build 1 → the COPY of build 2
            (source.context / "a.txt").write_text("beta\n")
            await _rebuilt(pilot, app, 2)
            copy = _step(app, "COPY a.txt")
            assert copy.state == DONE
            await _select(pilot, app, copy)
            await pilot.press("d")
            await _until(pilot, lambda: isinstance(app.screen, DiffScreen) and bool(app.screen.lines))
            screen = app.screen
            assert isinstance(screen, DiffScreen)
            a, b = screen.chosen
            assert screen.steps[a][1] == f"#{copy.number} {copy.name} · build #1", screen.steps
            assert screen.steps[b][1] == f"#{copy.number} {copy.name}"
            assert screen.lines[0] == "C /app/a.txt (6 B → 5 B)", screen.lines
            assert "    -alpha" in screen.lines and "    +beta" in screen.lines
            await pilot.press("escape")
            await pilot.press("q")
        assert mounts_under(source.root / "tmp") == []

    asyncio.run(run())


@contextmanager
def _no_terminal() -> Iterator[None]:
    """stdin from /dev/null for the shell's container (no terminal handed over), as a script's `e` would."""
    saved = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(null)


def test_a_shell_in_a_finished_step_after_the_build(registry: str, tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """`e` after the build: a container over the selected step's result (its env, workdir and user from the
    recorded RUN), on a throw-away layer: what it writes is dropped, and nothing stays mounted or running."""
    from workbench.history.lastrun import shell_config
    from workbench.tui.debug_session import run_step_shell

    source = _project(tmp_path, DOCKERFILE + "WORKDIR /app\nRUN echo second\n")
    root = source.root

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(160, 45)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            second = _step(app, "RUN echo second")
            await _select(pilot, app, second)
            assert "e" in app.screen.active_bindings
            assert app.shell_target() is second
            config, origin = shell_config(root, second.id)
            assert origin == "its own RUN" and config.cwd == "/app"
            capfd.readouterr()
            with _no_terminal():
                code = run_step_shell(app.source.result_engine(), root, second.cache_key,
                                      ["sh", "-c", "cat /made; pwd; ls a.txt; echo x > /leak"], config)
            out = capfd.readouterr().out
            assert code == 0 and out.split() == ["ran", "/app", "a.txt"], out
            # nothing left: no container, no mount under the root (this process's mountinfo)
            assert runc_containers(root) == []
            assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                        if str(root) in line]
            assert not list(root.glob("snapshots/*/fs/leak")), "the shell's change reached a snapshot"
            await pilot.press("q")

    asyncio.run(run())


def test_break_on_error_shows_the_filesystem_the_failed_step_left(registry: str, tmp_path: Path) -> None:
    source = _project(tmp_path, "FROM localhost:5055/busybox\nRUN echo x > /made && false\n")

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(160, 45)) as pilot:
            await _until(pilot, lambda: app.pause is not None and app.pause.reason == "error")
            await _until(pilot, lambda: app.pause is not None
                         and app.query_one(DagView).selected == app.pause.vertex.digest)
            await pilot.press("f")
            await _until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.root is not None)
            screen = app.screen
            assert isinstance(screen, FilesScreen)
            assert screen.title_text == "[2/2] RUN echo x > /made && false: the filesystem the failed step left"
            tree = screen.query_one(FileTree)
            await _until(pilot, lambda: "bin" in _names(tree.root))
            assert "made" in _names(tree.root)  # written by the failing RUN before it failed
            await pilot.press("escape")
            await _until(pilot, lambda: not isinstance(app.screen, FilesScreen), 5)

            await pilot.press("d")  # its input (the FROM) → what the failed RUN left
            await _until(pilot, lambda: isinstance(app.screen, DiffScreen) and bool(app.screen.lines))
            diff = app.screen
            assert isinstance(diff, DiffScreen)
            assert "A /made (2 B)" in diff.lines, diff.lines
            await pilot.press("escape")
            await _until(pilot, lambda: not isinstance(app.screen, DiffScreen), 5)
            await pilot.press("c")
            await _until(pilot, lambda: app.model.finished is not None)
            assert app.model.finished is not None and "exit code: 1" in app.model.finished.error
            await pilot.press("q")
        deadline = time.monotonic() + 5
        while mounts_under(source.root / "tmp") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mounts_under(source.root / "tmp") == []

    asyncio.run(run())


def test_e_after_the_build_in_tmux_leaves_nothing_behind(registry: str, tmp_path: Path) -> None:
    """In a real terminal: after the build, `e` on the last step (a COPY: no RUN after it, so the defaults) is
    busybox's sh in that step's files; once it exits the app is back and nothing is mounted or running. A
    terminal closed under such a shell takes its container and mounts with it."""
    session, root, _ = _start_app(tmp_path)
    try:
        _wait_pane(session, lambda s: "finished in" in s, 90)
        _tmux("send-keys", "-t", session, "G")
        time.sleep(0.3)
        _tmux("send-keys", "-t", session, "e")
        screen = _wait_pane(session, _shell_prompt, 15)
        assert "workbench: a shell in the filesystem of [3/3] COPY a.txt /a.txt" in screen, screen
        assert len(runc_containers(root, running_only=True)) == 1 and mounts_under(root / "tmp")
        _tmux("send-keys", "-t", session, "-l", "cat /one /a.txt; echo marker-$((6*7))")
        _tmux("send-keys", "-t", session, "Enter")
        screen = _wait_pane(session, lambda s: "marker-42" in s, 15)
        lines = [ln.strip() for ln in screen.splitlines()]
        assert lines[lines.index("marker-42") - 2:lines.index("marker-42")] == ["one", "hello"], screen
        _tmux("send-keys", "-t", session, "-l", "exit")
        _tmux("send-keys", "-t", session, "Enter")
        _wait_pane(session, lambda s: "shell exited with code 0" in s and "finished in" in s, 15)
        assert runc_containers(root) == [] and mounts_under(root / "tmp") == []  # the app still runs

        _tmux("send-keys", "-t", session, "e")  # again, and the terminal goes away under it
        _wait_pane(session, _shell_prompt, 15)
        _stop_reapers(root)
    finally:
        _tmux("kill-session", "-t", session)
    try:
        _assert_nothing_left(root)
    finally:
        _clean_after_kill(root)
