"""The workbench app: the live build graph with its logs, cache, devices and Dockerfile panels.

The builds run in a BuildRunner (workbench.tui.runner: threads, the event queue, generations); it tells the
app through messages: a batch of events is queued (one message per batch, however many log chunks arrived,
so a chatty step never blocks the UI), a build is paused at a step. The app keeps the screens, widgets and
actions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Static, TabbedContent, TabPane

from workbench.debug.controller import Pause
from workbench.progress.trace import CACHED, CANCELED, DONE, FAILED, RUNNING, paused_label
from workbench.tui import themes
from workbench.tui.debug_session import DebugSession, run_shell, run_step_shell
from workbench.tui.model import BuildModel, VertexState
from workbench.tui.predict import check as check_prediction
from workbench.tui.predict import expecting, on_screen, request_for
from workbench.tui.runner import BuildRunner
from workbench.tui.screens.diff import DiffScreen
from workbench.tui.screens.files import FilesScreen, ViewOpener
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.layers import LayersScreen, build_analysis, layers_ready
from workbench.tui.source import EventSource, remote_note
from workbench.tui.stepviews import FAILED_FS, EarlierResults, StepView, diff_pair, failed_view, result_view, step_views
from workbench.tui.widgets.cache_panel import CachePanel
from workbench.tui.widgets.dag_view import DagView
from workbench.tui.widgets.debug_bar import DebugBar
from workbench.tui.widgets.devices_panel import DevicesPanel, known_devices
from workbench.tui.widgets.editor import DockerfileEditor
from workbench.tui.widgets.log_pane import LogPane

if TYPE_CHECKING:
    from workbench.history.lastrun import LastRun
    from workbench.prediction import Prediction
    from workbench.request import BuildRequest

NARROW = 100
"""Below this width the graph goes above the panels instead of beside them."""


VIEW_INTERVAL_S = 0.05
"""The most often the views redraw from the model while events stream in."""
DRAIN_BUDGET_S = 0.012
"""How long one batch of events may hold the UI before keys and repaints get their turn."""


class EventsReady(Message):
    """Events are queued for the UI (posted once per batch, from the build's thread)."""


class PredictionReady(Message):
    """The prediction `token` of the next build came (None, with `error`, when it could not be told); `build`:
    start that build now (watch mode)."""

    def __init__(self, token: int, prediction: Prediction | None, error: str, build: bool) -> None:
        super().__init__()
        self.token, self.prediction, self.error, self.build = token, prediction, error, build


PREDICT_WAIT_S = 1.0
"""How long a watch-mode rebuild waits for its prediction before it starts anyway."""


class PauseReady(Message):
    """Build `generation` is paused at a step (posted from the thread that watches its pauses)."""

    def __init__(self, generation: int, pause: Pause) -> None:
        super().__init__()
        self.generation = generation
        self.pause = pause


DEBUG_ACTIONS = ("debug_resume", "debug_abort")
"""Actions that need a pause (hidden from the footer and off while the build runs); `e` and `d` work at a
pause and after the build (see `check_action`)."""
LOCAL_ACTIONS = ("toggle_breakpoint", "debug_shell", "debug_diff", "browse_files", "layers")
"""Actions on this machine's results and solver: off when the builds run on a remote BuildKit (said once)."""


class WorkbenchApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "workbench"
    AUTO_FOCUS = None
    BINDINGS = [
        Binding("q", "quit_app", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("r", "rerun", "Rerun"),
        Binding("n", "toggle_no_cache", "No-cache"),
        Binding("w", "toggle_watch", "Watch"),
        Binding("t", "next_theme", "Theme"),
        Binding("1", "focus_panel('dag')", "Graph", show=False),
        Binding("2", "focus_panel('logs')", "Logs", show=False),
        Binding("3", "focus_panel('cache')", "Cache", show=False),
        Binding("4", "focus_panel('devices')", "Devices", show=False),
        Binding("5", "focus_panel('editor')", "Editor", show=False),
        Binding("escape", "focus_panel('dag')", "Graph", show=False),
        Binding("f9,b", "toggle_breakpoint", "Breakpoint", show=False),
        Binding("f5,c", "debug_resume('continue')", "Continue"),
        Binding("f10,s", "debug_resume('next')", "Next"),
        Binding("f4,e", "debug_shell", "Shell"),
        Binding("d", "debug_diff", "Diff"),
        Binding("f", "browse_files", "Files"),
        Binding("A,f8", "debug_abort", "Abort"),
        Binding("H", "history", "History", show=False, tooltip="past builds of this Dockerfile: replay, compare"),
        Binding("L", "layers", "Layers",
                tooltip="the finished build's image layer by layer (like dive): sizes, waste, each one's changes"),
    ]

    def __init__(self, source: EventSource, theme: str | None = None, watch: bool = True,
                 clock: Callable[[], float] = time.time, devices: list[str] | None = None,
                 remember_theme: bool = True, break_on_error: bool = True) -> None:
        super().__init__()
        self.source = source
        self.debugging = DebugSession(break_on_error)
        self.runner = BuildRunner(source, self.debugging, events_ready=lambda: self.post_message(EventsReady()),
                                  paused=lambda gen, pause: self.post_message(PauseReady(gen, pause)))
        self.pause: Pause | None = None
        """The pause shown (None: the build is not held by the debugger)."""
        self.clock = clock
        self.model = BuildModel()
        self.no_cache = False
        self.watching = watch and source.context is not None and source.rerunnable
        self.devices = devices if devices is not None else known_devices(
            getattr(source, "cdi_spec_dirs", None), getattr(source, "config", None))
        self.remember_theme = remember_theme
        self._watch_stop = threading.Event()
        self._sizes: dict[str, int] = {}
        self._grants_shown = -1
        self._status_text = ""
        self._problems_text = "\0"
        self._files_offered: tuple[bool, ...] = ()
        self.earlier = EarlierResults()
        """Each step's results in the earlier builds of this app (`d` compares a step across builds)."""
        self._snapshots: dict[str, str | None] = {}  # cache key -> top snapshot looked up (None: looking)
        self._last_runs: dict[str, LastRun | str] = {}  # cache key -> its last run, or what to say instead
        self._graph_dirty = False
        self._views_pending = False
        self._views_shown = 0.0
        self._problems: dict[int, str] = {}
        self._lint_timer: object | None = None
        self._themes = themes.available_themes()
        for t in self._themes.values():
            self.register_theme(t)
        wanted = theme or str(themes.load_state().get("theme") or themes.DEFAULT_THEME)
        self._theme_name = wanted if wanted in self._themes else themes.DEFAULT_THEME
        self._predict_token = 0
        self._expected: Prediction | None = None  # the prediction of the next build, held to it when it ends
        self._checking: tuple[int, Prediction] | None = None  # (build generation, its prediction)

    @property
    def generation(self) -> int:
        """The number of the build shown (1 for the first)."""
        return self.runner.generation

    @property
    def build_label(self) -> str:
        """How the status line names the build shown: `build #N`, the Nth build this app started."""
        return f"build #{self.generation}"

    @property
    def first_step_seen(self) -> dict[int, float]:
        """Build generation -> monotonic time its first VertexStarted reached the UI (for latency benches)."""
        return self.runner.first_step_seen

    @property
    def first_op_seen(self) -> dict[int, float]:
        """The same for the first step that is not internal (the solver's first op that runs)."""
        return self.runner.first_op_seen

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """The workbench's own CSS variables, for themes that do not set them."""
        return dict(themes.VARIABLE_DEFAULTS)

    # -- layout ---------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        yield DebugBar(id="debug-bar")
        with Horizontal(id="main"):
            yield DagView(self.model, clock=self.clock, id="dag")
            with TabbedContent(id="panels", initial="tab-logs"):
                with TabPane("Logs", id="tab-logs"):
                    yield LogPane(id="logs")
                with TabPane("Cache", id="tab-cache"):
                    with VerticalScroll(id="cache-scroll"):
                        yield CachePanel("", id="cache")
                with TabPane("Devices", id="tab-devices"):
                    with VerticalScroll():
                        yield DevicesPanel("", id="devices")
                with TabPane("Dockerfile", id="tab-editor"):
                    with Vertical():
                        yield DockerfileEditor(self.source.dockerfile, id="editor")
                        yield Static("", id="problems")
        yield Footer()

    def on_mount(self) -> None:
        if self._theme_name in self._themes:
            self.theme = self._theme_name
        self._layout_for(self.size.width)
        dag = self.query_one(DagView)
        dag.border_title = "build graph"
        dag.focus()
        self.query_one(DevicesPanel).show(self.model, self.devices)
        self.set_interval(0.25, self._tick)
        self._lint_now()
        if self.source.remote:
            self.notify(remote_note(self.source.remote), title="remote BuildKit", timeout=10)
        self.start_build()
        if self.watching:
            self._watch_inputs()

    def on_resize(self, event: object) -> None:
        self._layout_for(self.size.width)

    def _layout_for(self, width: int) -> None:
        self.query_one("#main").set_class(width < NARROW, "narrow")

    # -- builds ---------------------------------------------------------------------------------------

    def start_build(self) -> None:
        """Start a build of the source (canceling the running one first; nothing of it is cached half-done)."""
        self.earlier.remember(self.model, self.generation)
        self._predict_token += 1  # a prediction still under way is for a build that has begun: dropped
        gen = self.runner.start(self.no_cache)
        self._set_pause(None)
        self.model = BuildModel()
        self._checking = (gen, self._expected) if self._expected is not None else None
        if self._expected is not None:
            self.model.prediction_note = expecting(self._expected)
        self._expected = None
        if self._main_screen_hidden():  # the history screen, help…: the views take the new model once it closes
            self._graph_dirty = True
            if not self._views_pending:
                self._views_pending = True
                self._refresh_views()
            return
        self.query_one(DagView).set_model(self.model)
        self.query_one(LogPane).show(self.model, None)
        self._show_selected()
        self._update_status()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running build and the watcher, and wait for the build to wind down."""
        self._watch_stop.set()
        self.runner.cancel(wait=timeout)

    @on(EventsReady)
    def _drain(self) -> None:
        revision = self.model.revision
        self.runner.drain(self.model.apply, DRAIN_BUDGET_S)
        if self._checking is not None and self.model.finished is not None and self._checking[0] == self.generation:
            self.model.prediction_note = check_prediction(self._checking[1], self.model)
            self._checking = None
        self._graph_dirty |= self.model.revision != revision
        self.views_follow()

    def views_follow(self) -> None:
        """Redraw the views from the model soon (the graph too when `_graph_dirty`)."""
        if not self._views_pending:
            # views follow the model at most every VIEW_INTERVAL_S: a busy build costs the UI a bounded share
            self._views_pending = True
            due = self._views_shown + VIEW_INTERVAL_S - time.monotonic()
            if due > 0:
                self.set_timer(due, self._refresh_views)
            else:
                self.call_later(self._refresh_views)

    def _main_screen_hidden(self) -> bool:
        """A modal screen (help, diff) is on top: the main screen's widgets are not queried through `self`."""
        return len(self.screen_stack) > 1

    def _refresh_views(self) -> None:
        if self._main_screen_hidden():
            self.set_timer(0.1, self._refresh_views)  # catch up when the modal screen closes
            return
        self._views_pending = False
        self._views_shown = time.monotonic()
        if self.query_one(DagView).model is not self.model:  # a build began under a modal screen (history)
            self.query_one(DagView).set_model(self.model)
            self.query_one(LogPane).show(self.model, None)
            self._graph_dirty = True
        if self._graph_dirty:
            self._graph_dirty = False
            self.query_one(DagView).refresh_rows()
            self._show_selected()
            self._update_status()
            self._offer_files()
        if self.query_one(TabbedContent).active == "tab-logs":
            self.query_one(LogPane).refresh_log()
        if len(self.model.grants) != self._grants_shown:
            self._grants_shown = len(self.model.grants)
            self.query_one(DevicesPanel).show(self.model, self.devices)

    def _tick(self) -> None:
        if self.model.running() and not self._main_screen_hidden():
            self.query_one(DagView).refresh()
            self._update_status()

    def _update_status(self) -> None:
        model = self.model
        counts = model.counts()
        fin = model.finished
        if fin is None:
            state = "running" if model.vertices else "starting"
        elif fin.error == "canceled":
            state = "canceled"
        else:
            ended = "failed" if model.first_failed() is not None else "aborted"  # at a pause: nothing failed
            state = f"{ended} after {fin.duration:.1f}s" if fin.error else f"finished in {fin.duration:.1f}s"
            if model.trace.paused:  # the duration is run time: a debugger's pauses are told apart
                state += f" ({paused_label(model.trace.paused)})"
        parts = [f"{self.build_label} {state}"]
        tally = [f"{counts[key]} {label}" for key, label in ((RUNNING, "running"), (CACHED, "cached"),
                                                              (DONE, "done"), (FAILED, "failed"),
                                                              (CANCELED, "canceled")) if counts.get(key)]
        if tally:
            parts.append(" ".join(tally))
        if self.pause is not None:
            src = self.pause.vertex.source
            parts.append(("failed, held" if self.pause.reason == "error" else "paused")
                         + (f" at line {src.start_line}" if src is not None else ""))
        if self.no_cache:
            parts.append("next run: no-cache")
        if model.prediction_note:
            parts.append(model.prediction_note)
        if self.watching:
            parts.append("watching")
        if self.source.remote:
            parts.append(f"on {self.source.remote}")
        name = self.source.dockerfile.name if self.source.dockerfile else "replay"
        text = f"[b]workbench[/] {name} · " + " · ".join(parts)
        if text != self._status_text:  # an update re-lays out the screen: only when it changed
            self._status_text = text
            self.query_one("#status", Static).update(text)

    # -- selection ------------------------------------------------------------------------------------

    def _selected(self) -> VertexState | None:
        return self.model.vertices.get(self.query_one(DagView).selected)

    @on(DagView.NodeSelected)
    def _node_selected(self, event: DagView.NodeSelected) -> None:
        self._show_selected()
        self._offer_files()

    def _show_selected(self) -> None:
        """Show the selected step in the visible panel (the others catch up when their tab is opened)."""
        v = self._selected()
        active = self.query_one(TabbedContent).active
        if active == "tab-logs":
            self.query_one(LogPane).show(self.model, v, self._last_run_of(v))
        elif active == "tab-cache":
            snapshot = self._snapshot_of(v)
            size = self._sizes.get(snapshot) if snapshot else None
            self.query_one(CachePanel).show(v, size, snapshot)
            if snapshot and size is None and self.source.root is not None:
                self._measure(snapshot)
        elif active == "tab-editor":
            self._update_marks()

    def _snapshot_of(self, v: VertexState | None) -> str | None:
        """`v`'s top snapshot: as its events told it, else (a cached step below another cached one, which the
        solver never looked at) as the cache store keeps it for its key; None while that is looked up."""
        if v is None or v.snapshot or v.state != CACHED or not v.cache_key or self.source.root is None:
            return v.snapshot if v is not None else ""
        if v.cache_key not in self._snapshots:
            self._snapshots[v.cache_key] = None
            self._lookup_snapshot(v.cache_key)
        return self._snapshots[v.cache_key]

    @work(thread=True, group="snapshot-lookup")
    def _lookup_snapshot(self, key: str) -> None:
        assert self.source.root is not None
        try:
            chain = self.source.result_engine().step_chain(self.source.root, key)
        except Exception:  # a root that cannot be opened now: the panel says `none`
            chain = None
        self._snapshots[key] = chain[-1] if chain else ""
        self.call_from_thread(self._show_selected)

    def _last_run_of(self, v: VertexState | None) -> LastRun | str | None:
        """For a cached step: its last run from the build history (looked up once per cache key)."""
        if v is None or v.state != CACHED or not v.cache_key or self.source.root is None:
            return None
        if v.cache_key not in self._last_runs:
            self._last_runs[v.cache_key] = "looking for its last run in the build history…"
            self._find_last_run(v.cache_key)
        return self._last_runs[v.cache_key]

    @work(thread=True, group="last-run")
    def _find_last_run(self, key: str) -> None:
        from workbench.history.lastrun import last_run

        assert self.source.root is not None
        try:
            found: LastRun | str | None = last_run(self.source.root, key)
        except Exception as e:  # an unreadable history: said in the pane, not fatal
            found = f"its last run cannot be read from the build history ({type(e).__name__}: {e})"
        self._last_runs[key] = found or "no recorded run of this step in the build history"
        self.call_from_thread(self._show_selected)

    @on(TabbedContent.TabActivated)
    def _tab_opened(self) -> None:
        self._show_selected()

    @work(thread=True, exclusive=True, group="snapshot-size")
    def _measure(self, snapshot: str) -> None:
        assert self.source.root is not None
        self._sizes[snapshot] = snapshot_size(self.source.root, snapshot)
        self.call_from_thread(self._show_selected)

    # -- editor ---------------------------------------------------------------------------------------

    def _update_marks(self) -> None:
        editor = self.query_one(DockerfileEditor)
        lines: set[int] = set()
        steps = self.model.running()
        selected = self._selected()
        if selected is not None:
            steps.append(selected)
        for v in steps:
            if v.source is not None:
                lines.update(range(v.source.start_line - 1, v.source.end_line))
        problems = dict(self._problems)
        problems.update(self.model.error_lines())  # an error outranks a warning on its line
        for w in self.model.warnings:
            if w.source is not None:
                problems.setdefault(w.source.start_line - 1, w.message)
        editor.set_marks(lines, problems)
        paused: set[int] = set()
        if self.pause is not None and self.pause.vertex.source is not None:
            src = self.pause.vertex.source
            paused = set(range(src.start_line - 1, src.end_line))
        editor.set_debug_marks({n - 1 for n in self.debugging.lines()}, paused)
        self.query_one(DagView).set_breakpoints(self.debugging.lines())
        text = "\n".join(f"line {n + 1}: {msg}" for n, msg in sorted(problems.items())[:8])
        if text != self._problems_text:
            self._problems_text = text
            self.query_one("#problems", Static).update(text or "no build-check warnings")

    @on(DockerfileEditor.Changed)
    def _edited(self) -> None:
        if self._lint_timer is not None:
            self._lint_timer.stop()  # type: ignore[attr-defined]
        self._lint_timer = self.set_timer(0.3, self._lint_now)

    def _lint_now(self) -> None:
        self._lint(self.query_one(DockerfileEditor).text)

    @work(thread=True, exclusive=True, group="lint")
    def _lint(self, text: str) -> None:
        problems = check_problems(text)
        self.call_from_thread(self._set_problems, problems)

    def _set_problems(self, problems: dict[int, str]) -> None:
        self._problems = problems
        self._update_marks()

    @on(DockerfileEditor.Saved)
    def _saved(self, event: DockerfileEditor.Saved) -> None:
        self.notify(f"saved {event.path}", timeout=2)
        if not self.watching and self.source.rerunnable:
            return
        # with watch on, the watcher sees the write and reruns

    # -- watch ----------------------------------------------------------------------------------------

    @work(thread=True, group="watch")
    def _watch_inputs(self) -> None:
        from workbench.watch import watch_inputs

        assert self.source.context is not None and self.source.dockerfile is not None
        for changed in watch_inputs(self.source.context, self.source.dockerfile, self._watch_stop):
            self.call_from_thread(self._inputs_changed, changed)

    def _inputs_changed(self, changed: list[str]) -> None:
        if not self.watching:
            self._predict_next(build=False)  # shown on the graph until `r` builds
            return
        dockerfile = self.source.dockerfile
        if dockerfile is not None and str(dockerfile.resolve()) in changed:
            self.screen_stack[0].query_one(DockerfileEditor).reload()  # a modal screen may be on top
        self.runner.cancel()  # stopped before the prediction looks at the cache, which it may still write
        self._predict_next(build=True)

    def _predict_next(self, build: bool) -> None:
        """Predict the next build (a worker); with `build`, start it once the prediction is in (or late)."""
        request = request_for(self.source, self.no_cache, self.debugging.new_debugger())
        if request is None:
            if build:
                self.start_build()
            return
        self._predict_token += 1
        token = self._predict_token
        self._predict(token, request, build)
        if build:
            self.set_timer(PREDICT_WAIT_S, lambda: self._prediction_late(token))

    @work(thread=True, group="predict")
    def _predict(self, token: int, request: BuildRequest, build: bool) -> None:
        from workbench.prediction import PredictionError

        prediction, error = None, ""
        try:
            prediction = self.source.result_engine().predict(request)
        except PredictionError as e:
            error = str(e)
        except Exception as e:  # a prediction never takes the app down
            error = f"{type(e).__name__}: {e}"
        self.post_message(PredictionReady(token, prediction, error, build))

    def _prediction_late(self, token: int) -> None:
        if token == self._predict_token:
            self.start_build()

    @on(PredictionReady)
    def _prediction_ready(self, event: PredictionReady) -> None:
        if event.token != self._predict_token:
            return  # a newer change, or the build it was for began without it
        if event.prediction is None:
            self.model.set_prediction({}, "next build: cannot predict: " + event.error.split("\n", 1)[0])
        else:
            shown = on_screen(event.prediction, self.model)
            self.model.set_prediction(shown.predicted, shown.note())
            self.notify(shown.message(), title="prediction", timeout=4)
        self._expected = event.prediction
        if event.build:
            self.start_build()
            return
        self._graph_dirty = True
        self.call_later(self._refresh_views)

    # -- actions --------------------------------------------------------------------------------------

    def action_rerun(self) -> None:
        if self.source.rerunnable:
            self.start_build()

    def action_toggle_no_cache(self) -> None:
        self.no_cache = not self.no_cache
        self.notify(f"no-cache {'on' if self.no_cache else 'off'} for the next run", timeout=2)
        if self._expected is not None:  # the prediction shown was for the other setting
            self._predict_next(build=False)
        self._update_status()

    def action_toggle_watch(self) -> None:
        if self.source.context is None or not self.source.rerunnable:
            self.notify("nothing to watch: this is not a live build", timeout=2)
            return
        self.watching = not self.watching
        if self.watching and self._watch_stop.is_set() is False and not self.workers:
            self._watch_inputs()
        self._update_status()

    def action_next_theme(self) -> None:
        names = list(self._themes)
        if not names:
            return
        current = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(current + 1) % len(names)]
        if self.remember_theme:
            themes.save_state(theme=self.theme)
        self.notify(f"theme {self.theme}", timeout=2)
        self.query_one(DockerfileEditor).set_marks(set(), {})
        self._update_marks()

    def action_history(self) -> None:
        """`H`: the past builds of this Dockerfile (workbench.tui.screens.history); the live build goes on."""
        from workbench.tui.screens.history import HistoryScreen

        if self.source.root is None:
            self.notify("no build history here: this is not a live build", timeout=2)
            return
        self.push_screen(HistoryScreen(self.source.root, self.source.dockerfile))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_focus_panel(self, panel: str) -> None:
        tabs = self.query_one(TabbedContent)
        if panel == "dag":
            self.query_one(DagView).focus()
            return
        tabs.active = f"tab-{panel}"
        target = {"logs": "#log-view", "cache": "#cache-scroll", "devices": "#tab-devices VerticalScroll",
                  "editor": "#editor"}[panel]
        self.query_one(target).focus()

    def action_quit_app(self) -> None:
        self._watch_stop.set()
        self.runner.cancel()  # shells end, a paused step lets go: no container outlives the app
        self.exit(0)

    # -- the debugger ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.source.remote and action in LOCAL_ACTIONS:
            return False
        if action in DEBUG_ACTIONS:
            return self.pause is not None
        if action in ("browse_files", "debug_diff", "debug_shell"):  # offered where they have something to open
            if self._main_screen_hidden() or not self.query(DagView):
                return False
            if action == "browse_files":
                return self.files_target() is not None
            if self.pause is not None:
                return action == "debug_shell" or len(self.diffable_steps()) >= 2
            if self.model.finished is None:  # while a build runs, only at its pauses
                return False
            return self.shell_target() is not None if action == "debug_shell" else len(self.diffable_steps()) >= 2
        if action == "layers":  # once a build has finished
            return not self._main_screen_hidden() and layers_ready(self.model, self.source.root)
        return True

    @on(PauseReady)
    def _pause_ready(self, event: PauseReady) -> None:
        if self.runner.is_current(event.generation, event.pause):
            self._set_pause(event.pause)

    def _set_pause(self, pause: Pause | None) -> None:
        self.pause = pause
        if self._main_screen_hidden():
            self.set_timer(0.1, lambda: self._set_pause(self.pause))  # shown once the modal screen closes
            return
        self.query_one(DebugBar).show(pause.info() if pause is not None else None)
        if pause is not None and pause.vertex.digest in self.model.vertices:
            self.query_one(DagView).select(pause.vertex.digest)
        self._update_marks()
        self._update_status()
        self.refresh_bindings()

    def action_toggle_breakpoint(self) -> None:
        """At the editor's cursor line when the editor has focus, else at the selected step's line."""
        if not self.source.debuggable:
            self.notify("breakpoints need a live build", timeout=2)
            return
        editor = self.query_one(DockerfileEditor)
        if self.focused is editor:
            line = editor.cursor_location[0] + 1
        else:
            v = self._selected()
            if v is None or v.source is None:
                self.notify("select a step, or put the editor's cursor on a line", timeout=2)
                return
            line = v.source.start_line
        now_set = self.debugging.toggle(line)
        note = editor.breakpoint_note(line) if now_set else None  # a FROM scratch: where it stops instead
        self.notify(f"breakpoint {'set' if now_set else 'cleared'} at line {line}" + (f"\n{note}" if note else ""),
                    timeout=5 if note else 2)
        self._update_marks()

    def action_debug_resume(self, how: str) -> None:
        pause, dbg = self.pause, self.runner.debugger
        if pause is None or dbg is None:
            return
        self._set_pause(None)
        dbg.resume(how)

    def action_debug_abort(self) -> None:
        self._set_pause(None)
        self.runner.cancel()

    def action_debug_shell(self) -> None:
        """`sh` inside the paused step, or after the build in the selected finished step's filesystem (on a
        throw-away layer): the app steps aside, the terminal is the shell's until it exits."""
        from textual.app import SuspendNotSupported

        pause, dbg = self.pause, self.runner.debugger
        target = self.shell_target() if pause is None else None
        if (pause is None or dbg is None) and target is None:
            return
        try:
            if pause is not None and dbg is not None:
                with self.suspend():
                    print(f"workbench: a shell in {pause.vertex.name} (changes are thrown away); exit to go back",
                          flush=True)
                    code = run_shell(dbg, pause, ["sh"])
            else:
                from workbench.history.lastrun import shell_config

                assert target is not None and self.source.root is not None
                v, root = target, self.source.root
                config, origin = shell_config(root, v.id)
                with self.suspend():
                    print(f"workbench: a shell in the filesystem of {v.name} (a throw-away layer: changes are "
                          f"dropped; env, workdir and user: {origin}); exit to go back", flush=True)
                    code = run_step_shell(self.source.result_engine(), root, v.cache_key, ["sh"], config)
        except SuspendNotSupported:
            self.notify("this terminal cannot hand itself to a shell", severity="error")
            return
        except RuntimeError as e:
            self.notify(f"shell: {e}", severity="error")
            return
        self.notify(f"shell exited with code {code}", timeout=3)

    def shell_target(self) -> VertexState | None:
        """The step `e` opens a shell in after the build: the selected finished or cached step (None: none)."""
        v = self._selected()
        if self.model.finished is None or self.source.root is None or v is None:
            return None
        return v if not v.internal and v.state in (DONE, CACHED) and v.cache_key else None

    def files_target(self) -> tuple[str, ViewOpener] | None:
        """What `f` shows (a title and how to open it), or None: at a pause with the paused step selected its
        input, or after a failure the filesystem the failed step left; else the selected step's result: as
        the build handed it on at a pause, or as the cache store keeps it (a finished or cached step)."""
        v = self._selected()
        pause = self.pause
        root = self.source.root
        if root is None:
            return None
        engine = self.source.result_engine()
        if pause is not None and (v is None or v.id == pause.vertex.digest):
            if pause.reason == "error":
                failed = pause
                return f"{pause.vertex.name}: {FAILED_FS}", lambda: failed_view(failed)
            chain = list(pause.chain)
            return f"the input of {pause.vertex.name}", lambda: engine.chain_view(root, chain)
        if v is None:
            return None
        view = result_view(v, pause, root, engine)
        return (view.label, view.open) if view is not None else None

    def _offer_files(self) -> None:
        """Show or hide `f`, `d` and `e` in the footer as the selected step gets (or loses) a filesystem."""
        offered = tuple(bool(self.check_action(a, ()))
                        for a in ("browse_files", "debug_diff", "debug_shell", "layers"))
        if offered != self._files_offered:
            self._files_offered = offered
            self.refresh_bindings()

    def action_layers(self) -> None:
        """The finished build's image, layer by layer (workbench.tui.screens.layers)."""
        root = self.source.root
        if root is None or not layers_ready(self.model, root):
            self.notify("the layers are shown once a build has finished", timeout=2)
            return
        title = self.source.dockerfile.name if self.source.dockerfile else "the build"
        self.push_screen(LayersScreen(title, build_analysis(self.model, root, title)))

    def action_browse_files(self) -> None:
        target = self.files_target()
        if target is None:
            self.notify("select a finished step to see its files", timeout=2)
            return
        self.push_screen(FilesScreen(*target))

    def _step_views(self) -> list[StepView]:
        root = self.source.root
        if root is None or (self.pause is None and self.model.finished is None):
            return []
        return step_views(self.model, self.pause, root, self.source.result_engine(), self.earlier)

    def diffable_steps(self) -> list[tuple[str, str]]:
        """(id, label) of the filesystems `d` can compare now: at a pause or after the build, each step's
        result (a failed step's: what it left), and before a step, its result in an earlier build where it
        differed (ids `earlier:<digest>`)."""
        return [(view.id, view.label) for view in self._step_views()]

    def action_debug_diff(self) -> None:
        from workbench.debug.fsview import diff_trees, format_diff

        views = self._step_views()
        if len(views) < 2:
            self.notify("a diff needs two finished steps", timeout=2)
            return
        by_id = {view.id: view for view in views}
        first, second = diff_pair(views, self.query_one(DagView).selected)

        def diff(a: str, b: str) -> list[str]:
            with by_id[a].open() as ra, by_id[b].open() as rb:
                return format_diff(diff_trees(ra, rb), ra, rb)

        self.push_screen(DiffScreen([(view.id, view.label) for view in views], diff, first, second))


def snapshot_size(root: Path, snapshot: str) -> int:
    """Bytes a snapshot's files take (-1 when it cannot be read)."""
    import os

    top = root / "snapshots" / snapshot / "fs"
    if not top.is_dir():
        return -1
    total = 0
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def check_problems(text: str) -> dict[int, str]:
    """0-based line -> message: the build checks' warnings, or the parse error, of a Dockerfile text."""
    from workbench.frontend.dockerfile.linter import CheckConfigError
    from workbench.frontend.dockerfile.parser import DockerfileParseError
    from workbench.frontend.dockerfile.shell import ShellExpansionError
    from workbench.lint import lint

    try:
        report = lint(text, build_args={}, target=None, ignore=None, resolve=None, all_stages=True)
    except DockerfileParseError as e:
        return {max(0, (e.line or 1) - 1): f"parse error: {e.message}"}
    except (CheckConfigError, ShellExpansionError) as e:
        return {0: str(e)}
    except Exception as e:  # the editor must survive any half-typed text
        return {0: f"{type(e).__name__}: {e}"}
    out: dict[int, str] = {}
    for w in report.warnings:
        out.setdefault(max(0, w.start_line - 1), f"{w.rule}: {w.message}")
    return out
