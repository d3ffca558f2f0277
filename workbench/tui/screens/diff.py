"""`d`: the files added / changed / removed between two finished steps, picked from two lists."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static

STYLES = {"A": "green", "D": "red", "C": "yellow"}


class DiffScreen(ModalScreen[None]):
    """Step A on the left, step B on the right (enter picks); the diff of A → B below."""

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, steps: list[tuple[str, str]], diff: Callable[[str, str], list[str]],
                 first: int, second: int) -> None:
        super().__init__()
        self.steps = steps
        """(vertex digest, label) of every step with a filesystem to compare."""
        self.diff = diff
        self.chosen = [first, second]
        self.lines: list[str] = []
        """The last diff shown (for tests and the record)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="diff-box"):
            yield Static("[b]diff[/] — pick step A (left) and step B (right) with enter; esc closes",
                         id="diff-title")
            with Horizontal(id="diff-pick"):
                yield OptionList(*[label for _, label in self.steps], id="diff-a")
                yield OptionList(*[label for _, label in self.steps], id="diff-b")
            with VerticalScroll(id="diff-scroll"):
                yield Static("", id="diff-out")

    def on_mount(self) -> None:
        a, b = self.query_one("#diff-a", OptionList), self.query_one("#diff-b", OptionList)
        a.border_title, b.border_title = "A (from)", "B (to)"
        a.highlighted, b.highlighted = self.chosen
        a.focus()
        self._compare()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.chosen[0 if event.option_list.id == "diff-a" else 1] = event.option_index
        self._compare()

    def _compare(self) -> None:
        a, b = self.chosen
        if not (0 <= a < len(self.steps) and 0 <= b < len(self.steps)):
            return
        self.query_one("#diff-out", Static).update(f"comparing {self.steps[a][1]} → {self.steps[b][1]} …")
        self._run_diff(self.steps[a][0], self.steps[b][0])

    @work(thread=True, exclusive=True, group="diff")
    def _run_diff(self, a: str, b: str) -> None:
        try:
            lines = self.diff(a, b)
        except Exception as e:  # a step's snapshots gone, a mount that failed: shown, not fatal
            lines = [f"error: {type(e).__name__}: {e}"]
        self.app.call_from_thread(self._show, lines)

    def _show(self, lines: list[str]) -> None:
        self.lines = lines
        text = Text()
        for line in lines:
            text.append(line + "\n", style=STYLES.get(line[:1], "") if not line.startswith(" ") else "dim")
        self.query_one("#diff-out", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)
