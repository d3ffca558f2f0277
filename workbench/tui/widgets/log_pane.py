"""The logs panel: which step, its error when it failed, its full log (or all steps), and `/` search; for a
cached step, the log of its last run, from the build history."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from workbench.history.lastrun import LastRun
from workbench.progress.trace import CACHED, CANCELED, FAILED
from workbench.tui.model import BuildModel, VertexState
from workbench.tui.widgets.log_view import CombinedLines, LogView, NoLines, StepLines


class RecordedLines:
    """A fixed list of lines (a cached step's last run)."""

    def __init__(self, lines: tuple[str, ...]) -> None:
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    def line(self, index: int) -> str:
        return self.lines[index]


class LogPane(Vertical):
    """Shows the selected step's log; `a` switches to all steps interleaved."""

    BINDINGS = [
        Binding("slash", "search", "Search log"),
        Binding("a", "toggle_combined", "All steps"),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model: BuildModel | None = None
        self.vertex: VertexState | None = None
        self.combined = False
        self.last_run: LastRun | str | None = None
        """For a cached step: its last run from the history, or what to say instead (still looking, none)."""
        self._shown: tuple[object, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static("", id="log-title")
        yield Static("", id="log-error")
        yield LogView(id="log-view")
        yield Input(placeholder="search the log (enter: next, shift+enter… esc: close)", id="log-search")

    def show(self, model: BuildModel, vertex: VertexState | None, last_run: LastRun | str | None = None) -> None:
        self.model, self.vertex, self.last_run = model, vertex, last_run
        self.refresh_log()

    def _earlier(self) -> LastRun | str | None:
        """The last run to show for the step shown (a cached step that logged nothing itself), if any."""
        v = self.vertex
        return self.last_run if v is not None and v.state == CACHED and not len(v.log) else None

    def refresh_log(self) -> None:
        """Pick up new lines (cheap when nothing but lines changed)."""
        view = self.query_one(LogView)
        model, vertex = self.model, self.vertex
        earlier = self._earlier()
        key: tuple[object, ...] = (id(model), self.combined, vertex.id if vertex and not self.combined else "",
                                   id(earlier))
        if key != self._shown:
            self._shown = key
            if model is None:
                view.set_source(NoLines())
            elif self.combined:
                view.set_source(CombinedLines(model))
            elif isinstance(earlier, LastRun):
                view.set_source(RecordedLines(earlier.lines))
            elif vertex is not None:
                view.set_source(StepLines(vertex))
            else:
                view.set_source(NoLines())
        else:
            view.update()
        title = self.query_one("#log-title", Static)
        error = self.query_one("#log-error", Static)
        if self.combined or vertex is None:
            self._set(title, "all steps, interleaved" if self.combined else "select a step to see its log")
            if error.display:
                error._wb_text = ""  # type: ignore[attr-defined]
                error.display = False
            return
        lines = len(vertex.log)
        if isinstance(earlier, LastRun):
            n = len(earlier.lines)
            # the note first: a long step name would push it past the pane's one-line title
            self._set(title, f"#{vertex.number} cached; its last run's {n} line{'s' if n != 1 else ''}, "
                             f"{earlier.label()} · {vertex.name}")
        elif earlier is not None:
            self._set(title, f"#{vertex.number} cached; {earlier} · {vertex.name}")
        else:
            plural = "s" if lines != 1 else ""
            self._set(title, f"#{vertex.number} {vertex.name} — {vertex.state}, {lines} line{plural}")
        message = f"ERROR: {vertex.error}" if vertex.state in (FAILED, CANCELED) and vertex.error else ""
        if getattr(error, "_wb_text", None) != message:  # its height varies: re-laid out, so only on change
            error._wb_text = message  # type: ignore[attr-defined]
            error.update(message)
            error.display = bool(message)

    @staticmethod
    def _set(title: Static, text: str) -> None:
        if getattr(title, "_wb_text", None) != text:  # one fixed-height line: no re-layout needed
            title._wb_text = text  # type: ignore[attr-defined]
            title.update(text, layout=False)

    def action_toggle_combined(self) -> None:
        self.combined = not self.combined
        self.refresh_log()

    def action_search(self) -> None:
        search = self.query_one("#log-search", Input)
        search.display = True
        search.focus()

    @on(Input.Submitted, "#log-search")
    def _next_match(self, event: Input.Submitted) -> None:
        found = self.query_one(LogView).find(event.value)
        self.notify(f"line {found + 1}" if found >= 0 else f"{event.value!r} not found", timeout=2)

    def on_key(self, event: object) -> None:
        from textual.events import Key

        if isinstance(event, Key) and event.key == "escape":
            search = self.query_one("#log-search", Input)
            if search.display:
                search.display = False
                self.query_one(LogView).focus()
                event.stop()
