"""`?`: every key of the running app and its panels, grouped, built from their bindings (a key added to the app
or a panel shows here as it is added); the arrows, pgup/pgdn and home/end scroll it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widgets import Static

from workbench.tui.model import SYMBOLS

GROUP_ORDER = ("build", "debugger", "replay", "graph", "logs", "editor")
"""The groups shown first, in this order; others (a view added later) follow in the order met."""
MORE = "more"
"""The group of the app's keys this module does not know (a screen or view added since)."""

APP_GROUPS = {
    "quit_app": "build", "help": "build", "rerun": "build", "toggle_no_cache": "build", "toggle_watch": "build",
    "next_theme": "build", "focus_panel": "build",
    "toggle_breakpoint": "debugger", "debug_resume": "debugger", "debug_shell": "debugger",
    "debug_diff": "debugger", "browse_files": "debugger", "debug_abort": "debugger",
    "toggle_pause": "replay", "step": "replay", "seek": "replay", "jump": "replay", "speed": "replay",
}
"""The app's actions, by name (without arguments), to their group."""
WIDGET_GROUPS = {"DagView": "graph", "LogPane": "logs", "LogView": "logs", "DockerfileEditor": "editor"}
"""A panel's class to the group of its keys (others: the class name)."""

EXPLAIN = {
    "quit_app": "quit (a running build is canceled cleanly; a paused build and its shells end cleanly)",
    "help": "this help (↑ ↓ pgup pgdn home end scroll it; esc closes)",
    "rerun": "rerun the build now (cancels a running one)",
    "toggle_no_cache": "toggle --no-cache for the next run",
    "toggle_watch": "toggle watch (rebuild when the Dockerfile or a context file changes)",
    "next_theme": "next theme (remembered)",
    "focus_panel('dag')": "the graph",
    "focus_panel('logs')": "the logs",
    "focus_panel('cache')": "the cache panel",
    "focus_panel('devices')": "the devices panel",
    "focus_panel('editor')": "the Dockerfile editor",
    "toggle_breakpoint": "toggle a breakpoint: at the editor's cursor line (editor focused) or the selected "
                         "step's line; the step runs again (not from the cache) and the build stops before it. "
                         "The editor's gutter marks it ●, and ▶ the step paused at",
    "debug_resume('continue')": "continue to the next breakpoint",
    "debug_resume('next')": "next: run this step, stop before the next",
    "debug_shell": "a shell (sh) inside the paused step, or after the build in the selected finished step's "
                   "files; the app comes back when it exits (changes are thrown away)",
    "debug_diff": "diff two finished or cached steps, or a step with its result in an earlier build: added / "
                  "changed / removed files with sizes, text diffs",
    "browse_files": "the files of the selected finished or cached step (at a pause with the paused step "
                    "selected: its input; at a failed step: what it left) as a tree; enter opens a directory or "
                    "shows a file, esc closes",
    "debug_abort": "abort the build",
    "toggle_pause": "pause / play the replay",
    "step(1)": "one event forward (and pause)",
    "step(-1)": "one event back (and pause)",
    "seek(5)": "5 s forward",
    "seek(-5)": "5 s back",
    "jump(0)": "to the start",
    "jump(1)": "to the end",
    "speed(2)": "play twice as fast",
    "speed(0.5)": "play half as fast",
    "cursor(-1)": "previous node",
    "cursor(1)": "next node",
    "cursor(-10)": "a page up",
    "cursor(10)": "a page down",
    "cursor_to(0)": "the first node",
    "cursor_to(-1)": "the last node",
    "follow_edge('input')": "to the node's first input",
    "follow_edge('dependent')": "to the node's first dependent",
    "toggle_stage": "fold or unfold the stage under the cursor",
    "fold_all": "fold or unfold all stages",
    "next_failed": "the next failed step",
    "search": "search (enter: next match, esc: close)",
    "toggle_combined": "all steps interleaved / the selected step",
    "scroll_lines(-1)": "a line up",
    "scroll_lines(1)": "a line down",
    "scroll_lines(-20)": "a page up",
    "scroll_lines(20)": "a page down",
    "top": "the top",
    "follow": "the end, following the live end",
    "save": "save (with watch on, saving reruns the build)",
}
"""Longer words for the known actions (by the action as bound, or its name); others show their description."""

NOTES = {
    "debugger": "live builds; break on error is on unless --no-break-on-error; q at a pause cancels the step",
    "graph": "the mouse selects nodes; " + "  ".join(f"{symbol} {state}" for state, symbol in SYMBOLS.items()),
    "editor": "esc goes back to the graph",
}

_KEY_NAMES = {"escape": "esc", "enter": "enter", "space": "space", "tab": "tab"}


@dataclass(frozen=True)
class HelpEntry:
    """One binding as the help shows it."""

    group: str
    keys: str
    text: str


def key_label(keys: str) -> str:
    """`f9,b` → `F9 / b`; `question_mark` → `?`."""
    out = []
    for key in keys.split(","):
        key = key.strip()
        if key in _KEY_NAMES:
            out.append(_KEY_NAMES[key])
        elif re.fullmatch(r"f\d+", key):
            out.append(key.upper())
        else:
            out.append(format_key(key))
    return " / ".join(out)


def _own_bindings(node: type[DOMNode]) -> list[tuple[type[DOMNode], Binding]]:
    """The bindings the node's classes declare, base classes first, Textual's own left out."""
    out = []
    for cls in reversed(node.__mro__):
        if not issubclass(cls, DOMNode) or cls.__module__.startswith("textual."):
            continue
        for b in cls.__dict__.get("BINDINGS", []):
            out.append((cls, b if isinstance(b, Binding) else Binding(*b)))
    return out


def _explain(b: Binding) -> str:
    return EXPLAIN.get(b.action) or EXPLAIN.get(b.action.split("(")[0]) or b.tooltip or b.description or b.action


def help_entries(app: App[object]) -> list[HelpEntry]:
    """Every key of `app` and of the panels on its main screen, grouped (GROUP_ORDER first)."""
    seen: set[tuple[str, str]] = set()
    entries: list[HelpEntry] = []

    def add(group: str, b: Binding) -> None:
        if (b.key, b.action) not in seen:
            seen.add((b.key, b.action))
            entries.append(HelpEntry(group, key_label(b.key), _explain(b)))

    for _cls, b in _own_bindings(type(app)):
        add(APP_GROUPS.get(b.action.split("(")[0], MORE), b)
    classes: list[type[DOMNode]] = []
    for node in app.screen_stack[0].walk_children():
        if type(node) not in classes:
            classes.append(type(node))
    for node_class in classes:
        for cls, b in _own_bindings(node_class):
            add(WIDGET_GROUPS.get(cls.__name__, cls.__name__.lower()), b)
    order = [g for g in GROUP_ORDER if any(e.group == g for e in entries)]
    order += [g for g in dict.fromkeys(e.group for e in entries) if g not in order]
    return [e for g in order for e in entries if e.group == g]


def help_table(entries: list[HelpEntry]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(ratio=1)
    table.add_row(Text("workbench — keys", style="bold"), "")
    group = ""
    for e in entries:
        if e.group != group:
            group = e.group
            table.add_row("", "")
            table.add_row(Text(group, style="bold"), Text(NOTES.get(group, ""), style="italic"))
        table.add_row(Text("  " + e.keys), Text(e.text))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
        Binding("up,k", "scroll_by(-1)", "Up", show=False),
        Binding("down,j", "scroll_by(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown,space", "page(1)", "Page down", show=False),
        Binding("home,g", "ends(0)", "Top", show=False),
        Binding("end,G", "ends(1)", "Bottom", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $panel; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[HelpEntry] = []
        """What the help lists (filled as it opens)."""

    def compose(self) -> ComposeResult:
        self.entries = help_entries(self.app)
        with VerticalScroll(id="help-scroll"):
            yield Static(help_table(self.entries), id="help-text")

    def action_scroll_by(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)

    def action_page(self, direction: int) -> None:
        scroll = self.query_one(VerticalScroll)
        scroll.scroll_relative(y=direction * max(scroll.scrollable_content_region.height - 1, 1), animate=False)

    def action_ends(self, end: int) -> None:
        scroll = self.query_one(VerticalScroll)
        if end:
            scroll.scroll_end(animate=False)
        else:
            scroll.scroll_home(animate=False)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
