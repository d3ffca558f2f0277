"""The workbench TUI: model folding, Pilot-driven real builds, and snapshots of the main screen per theme."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tui_events import DOCKERFILE, sample_events
from tests.tui_pilot import until as _until
from workbench.progress.trace import CACHED, DONE, FAILED, RUNNING
from workbench.tui.app import WorkbenchApp, check_problems
from workbench.tui.model import BuildModel, LogBuffer, stage_of
from workbench.tui.source import LiveBuildSource, ReplaySource
from workbench.tui.themes import available_themes
from workbench.tui.widgets.cache_panel import CachePanel
from workbench.tui.widgets.dag_view import DagView, short_name
from workbench.tui.widgets.log_pane import LogPane
from workbench.tui.widgets.log_view import LogView

THEMES = ["dark", "light", "high-contrast"]


@pytest.fixture(autouse=True)
def _tui_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))


def _replay_app(tmp_path: Path, theme: str = "dark") -> WorkbenchApp:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    return WorkbenchApp(ReplaySource(sample_events(), dockerfile=dockerfile), theme=theme, devices=[],
                        clock=lambda: sample_events()[-1].ts, remember_theme=False)


# -- the model, without Textual -----------------------------------------------------------------------


def test_model_folds_the_event_stream() -> None:
    model = BuildModel()
    for ev in sample_events():
        model.apply(ev)
    assert model.counts() == {DONE: 4, CACHED: 1, FAILED: 1}
    failed = model.first_failed()
    assert failed is not None and failed.number == 6 and "exit code: 3" in failed.error
    assert failed.log.lines == ["building", "\x1b[31mbroken\x1b[0m"]
    assert [stage_of(model.vertices[v].name) for v in model.order] == ["internal", "internal", "base", "base",
                                                                       "base", "stage-1"]
    depth = model.depth()
    assert [depth[v] for v in model.order[2:]] == [0, 1, 2, 3]
    assert model.combined == [(4, "preparing"), (6, "building"), (6, "\x1b[31mbroken\x1b[0m")]
    assert len(model.warnings) == 1 and model.finished is not None


def test_log_buffer_keeps_partial_lines() -> None:
    buf = LogBuffer()
    assert buf.feed(b"a\nb") == 1
    assert buf.all_lines() == ["a", "b"]
    buf.feed(b"c\r\n\n")
    assert buf.lines == ["a", "bc", ""] and buf.partial == "" and len(buf) == 3


def test_log_buffer_loses_no_line_whatever_the_chunking() -> None:
    import random

    data = b"".join(b"line %d\n" % n for n in range(200_000))
    buf = LogBuffer()
    rng = random.Random(5)
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 7, 64, 4096, 65536))
        buf.feed(data[pos:pos + size])
        pos += size
    assert len(buf.lines) == 200_000 and buf.partial == ""
    assert all(line == f"line {n}" for n, line in enumerate(buf.lines))


def test_plain_workbench_in_a_dockerfile_folder_opens_the_tui(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    exe = str(Path(sys.executable).parent / "workbench")
    proc = subprocess.run([exe], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "workbench tui: error: stdout is not a terminal" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([exe], cwd=empty, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "required" in proc.stderr  # no Dockerfile: the usage error, as before


def test_devices_panel_shows_grants_denials_and_the_empty_state(tmp_path: Path) -> None:
    from workbench.progress.events import DeviceGrant
    from workbench.tui.widgets.devices_panel import EMPTY, describe, known_devices

    assert "--cdi-spec-dir" in describe(BuildModel(), []) and describe(None, None) == EMPTY
    model = BuildModel()
    for ev in sample_events():
        model.apply(ev)
    run = model.order[-1]
    model.apply(DeviceGrant(run, "vendor1.com/device=foo", ("vendor1.com/device=foo",), True,
                            "auto-allow (annotation)"))
    model.apply(DeviceGrant(run, "vendor1.com/device=bar", (), False, "not allowed: grant it with --allow device",
                            required=True))
    text = describe(model, ["vendor1.com/device=foo (auto-allowed: annotation)"])
    assert "known devices" in text and "vendor1.com/device=foo (auto-allowed: annotation)" in text
    assert "#6 vendor1.com/device=foo → vendor1.com/device=foo optional: granted (auto-allow (annotation))" in text
    assert "#6 vendor1.com/device=bar: [b]denied[/] (not allowed: grant it with --allow device)" in text
    spec_dir = tmp_path / "cdi"
    spec_dir.mkdir()
    (spec_dir / "vendor1.yaml").write_text('cdiVersion: "0.6.0"\nkind: vendor1.com/device\n'
                                          'devices:\n  - name: foo\n    containerEdits:\n      env: [FOO=1]\n')
    assert known_devices([str(spec_dir)]) == ["vendor1.com/device=foo"]


def test_short_names_and_problems() -> None:
    assert short_name("[build 2/4] RUN make") == "[2/4] RUN make"
    assert short_name("[internal] load x") == "[internal] load x"
    assert short_name("[1/3] FROM busybox") == "[1/3] FROM busybox"  # one unnamed stage: nothing to drop
    problems = check_problems("FROM busybox as Base\nRUN true\n")
    assert any("StageNameCasing" in m or "FromAsCasing" in m for m in problems.values()) and 0 in problems
    assert check_problems("FROM busybox\nRUN <<EOF\n") != {}


# -- Pilot: replayed and real builds -------------------------------------------------------------------


def test_replayed_failed_build_selects_the_failed_node(tmp_path: Path) -> None:
    async def run() -> None:
        app = _replay_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            await pilot.pause(0.15)
            dag = app.query_one(DagView)
            assert app.model.vertices[dag.selected].state == FAILED  # the cursor followed the build to the error
            pane = app.query_one(LogPane)
            assert "exit code: 3" in str(pane.query_one("#log-error").render())
            view = app.query_one(LogView)
            assert [view.source.line(i) for i in range(len(view.source))] == ["building", "\x1b[31mbroken\x1b[0m"]
            await pilot.press("up", "up")  # to the COPY node (the stage-1 header is between)
            await pilot.pause(0.05)
            assert app.model.vertices[dag.selected].number == 5
            await pilot.press("3")
            await pilot.pause(0.05)
            assert "app.txt" in str(app.query_one(CachePanel).render())
            await pilot.press("2", "a")  # logs, all steps interleaved
            assert [view.source.line(i) for i in range(len(view.source))][0] == "#4 preparing"
            await pilot.press("escape", "question_mark")
            assert app.screen.__class__.__name__ == "HelpScreen"
            await pilot.press("escape", "q")
        assert app.return_value == 0

    asyncio.run(run())


def test_editor_highlights_marks_problems_and_saves(tmp_path: Path) -> None:
    from workbench.tui.widgets.editor import DockerfileEditor

    async def run() -> None:
        app = _replay_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.model.finished is not None)
            await pilot.press("5")
            editor = app.query_one(DockerfileEditor)
            await _until(pilot, lambda: 0 in editor.problem_lines, 10)  # the build's warning, at line 1
            assert any(name == "keyword" for _, _, name in editor._highlights[0])  # FROM, from pygments
            assert 5 in editor.step_lines  # the selected (failed) step's line 6
            assert "line 1:" in str(app.query_one("#problems").render())
            editor.move_cursor((6, 0))
            await pilot.press(*"RUN true", "ctrl+s")
            await pilot.pause(0.05)
            assert (tmp_path / "Dockerfile").read_text().endswith("RUN true")
            await pilot.press("escape", "q")

    asyncio.run(run())


def test_theme_key_cycles_and_is_remembered(tmp_path: Path) -> None:
    async def run() -> str:
        dockerfile = tmp_path / "Dockerfile"
        dockerfile.write_text(DOCKERFILE)
        app = WorkbenchApp(ReplaySource(sample_events(), dockerfile=dockerfile), devices=[])
        async with app.run_test(size=(80, 24)) as pilot:
            first = app.theme
            await pilot.press("t")
            assert app.theme != first and app.theme in available_themes()
            return app.theme

    chosen = asyncio.run(run())
    assert f'"theme": "{chosen}"' in Path(os.environ["WORKBENCH_TUI_STATE"]).read_text()


REAL = """\
FROM localhost:5055/busybox
RUN echo first > /first && sleep 0.4
COPY a.txt /a.txt
RUN cat /a.txt
"""


def test_pilot_drives_a_real_build_and_a_rebuild(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("one\n")
    (ctx / "Dockerfile").write_text(REAL)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")

    async def run() -> None:
        # break on error off: the failing build below must end, not be held (tests/test_tui_debug.py holds it)
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False, break_on_error=False)
        seen: dict[int, set[str]] = {}
        async with app.run_test(size=(120, 40)) as pilot:
            def record() -> bool:
                for v in app.model.vertices.values():
                    seen.setdefault(v.number, set()).add(v.state)
                return app.model.finished is not None

            await _until(pilot, record)
            assert app.model.finished is not None and app.model.finished.error == ""
            names = {v.number: v.name for v in app.model.vertices.values()}
            run_step = next(n for n, name in names.items() if "sleep 0.4" in name)
            assert RUNNING in seen[run_step] and DONE in seen[run_step]  # it was seen running, then done
            assert all(v.state in (DONE, CACHED) for v in app.model.vertices.values())
            cat = next(v for v in app.model.vertices.values() if "cat /a.txt" in v.name)
            assert cat.log.lines == ["one"]

            (ctx / "a.txt").write_text("two\n")
            await pilot.press("r")
            await _until(pilot, lambda: app.model.finished is not None and app.generation == 2)
            states = {v.name: v.state for v in app.model.vertices.values()}
            assert states["[2/4] RUN echo first > /first && sleep 0.4"] == CACHED
            copy = next(v for v in app.model.vertices.values() if "COPY a.txt" in v.name)
            assert copy.state == DONE
            app.query_one(DagView).select(copy.id)
            await pilot.press("3")
            await pilot.pause(0.2)
            text = str(app.query_one(CachePanel).render())
            assert "CACHE MISS" in text and "a.txt changed" in text, text
            assert "files read (1)" in text and "snapshot" in text

            (ctx / "Dockerfile").write_text(REAL + "RUN echo bad >&2; exit 7\n")
            await pilot.press("r")
            await _until(pilot, lambda: app.model.finished is not None and app.generation == 3)
            await pilot.pause(0.05)
            dag = app.query_one(DagView)
            failed = app.model.vertices[dag.selected]
            assert failed.state == FAILED and "exit 7" in failed.name
            await pilot.press("2")
            await pilot.pause(0.1)
            pane = app.query_one(LogPane)
            assert "exit code: 7" in str(pane.query_one("#log-error").render())
            assert failed.log.lines == ["bad"]
            await pilot.press("q")

    asyncio.run(run())


def test_rerun_cancels_the_running_build_cleanly(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo slow && sleep 1.5 && echo slow-done\n")
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(120, 40)) as pilot:
            def slow_running() -> bool:
                return any("sleep" in v.name and v.state == RUNNING for v in app.model.vertices.values())

            await _until(pilot, slow_running)
            first_thread = app.runner.thread
            await pilot.press("r")  # cancels build 1 (its container is killed) and starts build 2
            assert app.generation == 2
            await _until(pilot, lambda: app.model.finished is not None and app.generation == 2)
            assert first_thread is not None and not first_thread.is_alive()
            assert app.model.finished is not None and app.model.finished.error == ""
            slow = next(v for v in app.model.vertices.values() if "sleep" in v.name)
            assert slow.state == DONE and slow.log.lines == ["slow", "slow-done"]  # ran again, whole
            await pilot.press("q")

    asyncio.run(run())


# -- snapshots of the main screen, one per theme (a replayed build: fixed times) ----------------------


@pytest.mark.parametrize("theme", THEMES)
def test_main_screen_snapshot(theme: str, tmp_path: Path, snap_compare: object) -> None:
    app = _replay_app(tmp_path, theme)

    async def settle(pilot: object) -> None:
        await _until(pilot, lambda: app.model.finished is not None)
        await pilot.pause(0.1)  # type: ignore[attr-defined]

    assert snap_compare(app, terminal_size=(120, 40), run_before=settle)  # type: ignore[operator]


def test_narrow_screen_snapshot(tmp_path: Path, snap_compare: object) -> None:
    app = _replay_app(tmp_path)

    async def settle(pilot: object) -> None:
        await _until(pilot, lambda: app.model.finished is not None)
        await pilot.pause(0.1)  # type: ignore[attr-defined]

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)  # type: ignore[operator]


def test_engine_and_cli_start_up_do_not_import_the_ui() -> None:
    code = ("import sys, workbench.build, workbench.solver.solver, workbench.watch, workbench.cli; "
            "workbench.cli._build_parser(); "
            "bad = sorted(m for m in sys.modules if m.startswith(('textual', 'workbench.tui.app', 'pygments'))); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_tui_refuses_without_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "workbench"), "tui", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "stdout is not a terminal" in proc.stderr
