"""A step's log, or all steps interleaved: every line kept, rendered lazily (only what is on screen), searchable."""

from __future__ import annotations

from typing import Protocol

from rich.segment import Segment
from rich.text import Text
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from workbench.tui.model import BuildModel, VertexState


class LineSource(Protocol):
    """Lines to show; they only ever grow (the last one may still change)."""

    def __len__(self) -> int: ...

    def line(self, index: int) -> str: ...


class NoLines:
    def __len__(self) -> int:
        return 0

    def line(self, index: int) -> str:
        return ""


class StepLines:
    """One step's output."""

    def __init__(self, vertex: VertexState) -> None:
        self.log = vertex.log

    def __len__(self) -> int:
        return len(self.log)

    def line(self, index: int) -> str:
        lines = self.log.lines
        return lines[index] if index < len(lines) else self.log.partial


class CombinedLines:
    """Every step's lines as they arrived, prefixed with the step number like `--progress plain`."""

    def __init__(self, model: BuildModel) -> None:
        self.combined = model.combined

    def __len__(self) -> int:
        return len(self.combined)

    def line(self, index: int) -> str:
        number, text = self.combined[index]
        return f"#{number} {text}"


class LogView(ScrollView, can_focus=True):
    """Scrolls through a LineSource; follows the end until the user scrolls up (`end` follows again)."""

    BINDINGS = [
        Binding("up,k", "scroll_lines(-1)", "Up", show=False),
        Binding("down,j", "scroll_lines(1)", "Down", show=False),
        Binding("pageup", "scroll_lines(-20)", "Page up", show=False),
        Binding("pagedown,space", "scroll_lines(20)", "Page down", show=False),
        Binding("home,g", "top", "Top", show=False),
        Binding("end,G", "follow", "End", show=False),
    ]
    COMPONENT_CLASSES = {"log--match"}
    DEFAULT_CSS = """
    LogView { background: $surface; }
    LogView > .log--match { background: $accent 50%; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.source: LineSource = NoLines()
        self.following = True
        self.match_line = -1
        self._strips: LRUCache[tuple[int, str], Strip] = LRUCache(1024)
        self._width = 0

    def set_source(self, source: LineSource) -> None:
        self.source = source
        self.following = True
        self.match_line = -1
        self._strips.clear()
        self._width = 0
        self.update()

    def update(self) -> None:
        """New lines may have arrived: grow, and follow the end when following."""
        count = len(self.source)
        if count:  # the width of lines seen so far (just the last few: long logs are not measured whole)
            self._width = max(self._width, *(len(self.source.line(i)) for i in range(max(0, count - 50), count)))
        self.virtual_size = Size(self._width + 1, count)
        if self.following:
            self.call_after_refresh(self._to_end)  # once the new virtual size is laid out
        self.refresh()

    def _to_end(self) -> None:
        if self.following:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.source):
            return Strip.blank(width, self.rich_style)
        text = self.source.line(index)
        key = (index, text)
        strip = self._strips.get(key)
        if strip is None:
            rich = Text.from_ansi(text) if "\x1b" in text else Text(text)
            rich.expand_tabs()
            segments = [Segment(s.text.replace("\r", ""), s.style) for s in rich.render(self.app.console)]
            strip = Strip(segments).apply_style(self.rich_style)
            self._strips[key] = strip
        strip = strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, self.rich_style)
        if index == self.match_line:
            strip = strip.apply_style(self.get_component_rich_style("log--match"))
        return strip

    def action_scroll_lines(self, delta: int) -> None:
        self.following = False
        self.scroll_to(y=self.scroll_offset.y + delta, animate=False)
        if delta > 0 and self.scroll_offset.y + self.size.height >= len(self.source):
            self.following = True

    def action_top(self) -> None:
        self.following = False
        self.scroll_to(y=0, animate=False)

    def action_follow(self) -> None:
        self.following = True
        self.update()

    def find(self, query: str, forward: bool = True) -> int:
        """Move to the next line (after the current match) containing `query`, case-insensitively; -1 if none."""
        needle = query.lower()
        count = len(self.source)
        if not needle or not count:
            return -1
        start = self.match_line if self.match_line >= 0 else (self.scroll_offset.y - 1 if forward else count)
        step = 1 if forward else -1
        for k in range(1, count + 1):
            i = (start + step * k) % count
            if needle in self.source.line(i).lower():
                self.match_line = i
                self.following = False
                self.scroll_to(y=max(0, i - self.size.height // 2), animate=False)
                self.refresh()
                return i
        return -1
