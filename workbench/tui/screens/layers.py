"""`L`: the layers of the finished build's image, as dive shows them: the layer list on the left (size, the
step and line that made it), the selected layer's changes as a tree on the right (`+` added, `~` changed, `-`
removed, also coloured), the image's efficiency and wasted bytes on top. The analysis
(workbench.imagelayers) runs in a worker; its report reaches the screen as a message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static, Tree
from textual.widgets.option_list import Option
from textual.widgets.tree import TreeNode

from workbench.imagelayers.analysis import ADDED, CHANGED, FILE, LINK, REMOVED, Change, Layer, LayerReport
from workbench.imagelayers.report import efficiency_line, short_step, size
from workbench.imagelayers.sources import BuiltStep, LayerError
from workbench.tui.model import BuildModel

MARKS = {ADDED: ("+", "green"), CHANGED: ("~", "yellow"), REMOVED: ("-", "red")}
"""Each kind of change: its mark (so that it is told without colour) and its colour."""
TREE_LIMIT = 2000
"""The most changes one layer's tree shows (the rest are counted)."""
EXPAND_LIMIT = 300
"""A tree with at most this many nodes opens fully; a larger one shows its top level."""

Analysis = Callable[[], LayerReport]
"""Works out the report (in a worker thread); raises LayerError with what to say instead."""


def layers_ready(model: BuildModel, root: Path | None) -> bool:
    """Whether `L` is offered: a build finished without error, on a root whose results can be read."""
    return root is not None and model.finished is not None and not model.finished.error


def build_analysis(model: BuildModel, root: Path, title: str) -> Analysis:
    """The analysis of the image the model's finished build made (its steps as the events told them)."""
    from workbench.imagelayers.sources import build_report

    steps = [BuiltStep(v.id, v.name, v.source.start_line if v.source else None, v.cache_key, v.inputs)
             for v in (model.vertices[vid] for vid in model.order) if not v.internal]
    return lambda: build_report(root, steps, title)


def layer_label(layer: Layer) -> Text:
    """A row of the layer list: number, size, line, step (waste marked with `!`)."""
    text = Text(f"{layer.index:>2} ", style="bold", no_wrap=True, overflow="ellipsis")
    text.append(f"{size(layer.size):>9} ")
    text.append("!" if layer.wasted else " ", style="bold red")
    text.append(f" L{layer.line:<3} " if layer.line is not None else "      ", style="dim")
    text.append(short_step(layer.step))  # a FROM's pinned digest: in the detail
    return text


def layer_detail(layer: Layer) -> str:
    """What the selected layer does, above its tree."""
    where = f" · line {layer.line}" if layer.line is not None else ""
    lines = [f"layer {layer.index}{where} · {size(layer.size)} · {layer.added} added, {layer.changed} changed, "
             f"{layer.removed} removed", layer.step]
    if layer.digest:
        lines.append(f"digest {layer.digest[:19]} · wasted {size(layer.wasted)}")
    else:
        lines.append(f"wasted {size(layer.wasted)}")
    for w in sorted(layer.waste, key=lambda w: -w.size)[:3]:
        lines.append(f"wasted {size(w.size)} {w.path} ({w.how} by layer {w.by})")
    if len(layer.waste) > 3:
        lines.append(f"… {len(layer.waste) - 3} more wasted paths")
    return "\n".join(lines)


def change_label(name: str, change: Change | None) -> Text:
    """A tree node: the mark and name of a change (`+ big  10.5 MB`), or a plain directory on the way to one."""
    if change is None:
        return Text(name + "/", style="dim")
    mark, colour = MARKS[change.kind]
    text = Text(f"{mark} {name}{'/' if change.is_dir else ''}", style=colour)
    if change.entry == FILE:
        text.append(f"  {size(change.size)}", style="dim")
    elif change.entry == LINK:
        text.append("  (link)", style="dim")
    return text


class ChangeTree(Tree[str]):
    """The selected layer's changes, as a tree of paths."""

    def show(self, changes: list[Change]) -> None:
        self.clear()
        nodes: dict[str, TreeNode[str]] = {"/": self.root}
        for change in changes[:TREE_LIMIT]:
            parent = self._node(nodes, change.path.rsplit("/", 1)[0] or "/")
            name = change.path.rsplit("/", 1)[1]
            if change.is_dir:
                if change.path in nodes:  # reached before as the way to a change below
                    nodes[change.path].set_label(change_label(name, change))
                else:
                    nodes[change.path] = parent.add(change_label(name, change), change.path)
            else:
                parent.add_leaf(change_label(name, change), change.path)
        if len(changes) > TREE_LIMIT:
            self.root.add_leaf(Text(f"… {len(changes) - TREE_LIMIT} more changes", style="dim"))
        if len(nodes) + len(changes) <= EXPAND_LIMIT:
            self.root.expand_all()
        else:
            self.root.expand()
        if not changes:
            self.root.add_leaf(Text("no changes", style="dim"))

    def _node(self, nodes: dict[str, TreeNode[str]], path: str) -> TreeNode[str]:
        if path not in nodes:
            parent = self._node(nodes, path.rsplit("/", 1)[0] or "/")
            nodes[path] = parent.add(change_label(path.rsplit("/", 1)[1], None), path)
        return nodes[path]


class LayersScreen(ModalScreen[None]):
    """The layer list on the left, the selected layer's change tree on the right; esc closes."""

    CSS_PATH = "layers.tcss"
    BINDINGS = [Binding("escape,q", "close", "Close"), Binding("tab", "switch_pane", "List / tree")]

    class Analysed(Message):
        """The report is ready (or could not be made: `error`)."""

        def __init__(self, report: LayerReport | None, error: str = "") -> None:
            super().__init__()
            self.report = report
            self.error = error

    def __init__(self, title: str, analysis: Analysis) -> None:
        super().__init__()
        self.title_text = title
        self.analysis = analysis
        self.report: LayerReport | None = None
        """The report shown (None until it is worked out)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="layers-box"):
            yield Static(Text(f"layers of {self.title_text}", style="bold"), id="layers-title")
            yield Static("reading the layers …", id="layers-summary")
            with Horizontal(id="layers-main"):
                yield OptionList(id="layers-list")
                with Vertical(id="layers-right"):
                    yield Static("", id="layers-detail")
                    yield ChangeTree("/", "/", id="layers-tree")

    def on_mount(self) -> None:
        listing = self.query_one(OptionList)
        listing.border_title = "layers"
        listing.border_subtitle = "↑ ↓ pick · tab: tree · esc: close"
        tree = self.query_one(ChangeTree)
        tree.border_title = "changes  (+ added  ~ changed  - removed)"
        tree.show_root = False
        listing.focus()
        self._analyse()

    @work(thread=True, group="layers")
    def _analyse(self) -> None:
        try:
            self.post_message(self.Analysed(self.analysis()))
        except LayerError as e:
            self.post_message(self.Analysed(None, str(e)))
        except Exception as e:  # a root that cannot be read now: said on the screen, not fatal
            self.post_message(self.Analysed(None, f"{type(e).__name__}: {e}"))

    @on(Analysed)
    def _analysed(self, event: Analysed) -> None:
        summary = self.query_one("#layers-summary", Static)
        if event.report is None:
            summary.update(Text(event.error, style="bold red"))
            return
        self.report = event.report
        summary.update(f"{len(event.report.layers)} layers · " + efficiency_line(event.report))
        listing = self.query_one(OptionList)
        listing.add_options([Option(layer_label(layer), id=str(layer.index)) for layer in event.report.layers])
        if event.report.layers:
            listing.highlighted = 0
            self._show(0)

    @on(OptionList.OptionHighlighted)
    def _picked(self, event: OptionList.OptionHighlighted) -> None:
        self._show(event.option_index)

    def _show(self, index: int) -> None:
        if self.report is None or not 0 <= index < len(self.report.layers):
            return
        layer = self.report.layers[index]
        self.query_one("#layers-detail", Static).update(layer_detail(layer))
        self.query_one(ChangeTree).show(layer.changes)

    def action_switch_pane(self) -> None:
        listing, tree = self.query_one(OptionList), self.query_one(ChangeTree)
        (tree if listing.has_focus else listing).focus()

    def action_close(self) -> None:
        self.dismiss(None)
