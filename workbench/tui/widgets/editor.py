"""The Dockerfile editor: pygments' DockerLexer highlighting, check warnings and parse errors at their lines,
the running step's lines marked, breakpoints and the paused step marked in the gutter (a glyph, not colour
alone); ctrl+s writes the file."""

from __future__ import annotations

from pathlib import Path

from pygments.lexers import DockerLexer
from pygments.token import Token, _TokenType
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.strip import Strip
from textual.widgets import TextArea

BREAKPOINT_GLYPH = "●"
PAUSE_GLYPH = "▶"
"""Drawn in the gutter, after the line number: a breakpoint's line, the first line of the step paused at."""

_LEXER = DockerLexer()
# pygments token types to the highlight names TextArea themes style
_NAMES: list[tuple[_TokenType, str]] = [
    (Token.Comment, "comment"),
    (Token.Keyword, "keyword"),
    (Token.Literal.String, "string"),
    (Token.Literal.Number, "number"),
    (Token.Name.Variable, "variable"),
    (Token.Name.Builtin, "function"),
    (Token.Name.Function, "function"),
    (Token.Operator, "operator"),
    (Token.Punctuation, "punctuation.bracket"),
]


def highlight_name(token: _TokenType) -> str | None:
    for kind, name in _NAMES:
        if token in kind:
            return name
    return None


def highlights(text: str) -> dict[int, list[tuple[int, int | None, str]]]:
    """Per line (0-based), (start byte, end byte, name) ranges from pygments tokens."""
    out: dict[int, list[tuple[int, int | None, str]]] = {}
    row, col = 0, 0
    for _pos, token, value in _LEXER.get_tokens_unprocessed(text):
        name = highlight_name(token)
        for k, piece in enumerate(value.split("\n")):
            if k:
                row, col = row + 1, 0
            size = len(piece.encode())
            if name and size:
                out.setdefault(row, []).append((col, col + size, name))
            col += size
    return out


class DockerfileEditor(TextArea):
    """A TextArea over the Dockerfile; `marks` are 1-based line ranges with a reason."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True)]

    class Saved(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def __init__(self, path: Path | None, **kwargs: object) -> None:
        text = ""
        if path is not None:
            try:
                text = path.read_text()
            except OSError:
                text = ""
        super().__init__(text, show_line_numbers=True, soft_wrap=False, **kwargs)  # type: ignore[arg-type]
        self.path = path
        self.step_lines: set[int] = set()
        """0-based lines of the steps running now (or the selected step)."""
        self.problem_lines: dict[int, str] = {}
        """0-based line -> the warning or error shown there."""
        self.breakpoint_lines: set[int] = set()
        """0-based lines with a breakpoint."""
        self.pause_lines: set[int] = set()
        """0-based lines of the step the debugger holds the build at."""

    def _build_highlight_map(self) -> None:
        self._line_cache.clear()
        self._highlights.clear()
        for row, items in highlights(self.text).items():
            self._highlights[row].extend(items)

    def get_line(self, line_index: int) -> Text:
        line = super().get_line(line_index)
        if line_index in self.pause_lines:
            line.stylize(Style(bold=True))
            line.stylize(self._variable_style("editor-pause-background"))
        elif line_index in self.breakpoint_lines:
            line.stylize(self._variable_style("editor-breakpoint-background"))
        elif line_index in self.problem_lines:
            line.stylize(Style(underline=True))
            line.stylize(self._variable_style("editor-warning-background"))
        elif line_index in self.step_lines:
            line.stylize(self._variable_style("editor-step-background"))
        return line

    def gutter_glyph(self, line_index: int) -> str:
        """The mark in the gutter of a (0-based) line: the paused step's first line, a breakpoint, or none."""
        if self.pause_lines and line_index == min(self.pause_lines):
            return PAUSE_GLYPH
        return BREAKPOINT_GLYPH if line_index in self.breakpoint_lines else ""

    def _render_line(self, y: int) -> Strip:
        strip = super()._render_line(y)
        if not self.show_line_numbers or not (self.breakpoint_lines or self.pause_lines):
            return strip
        info = self.wrapped_document._offset_to_line_info
        offset = y + self.scroll_offset.y
        if not 0 <= offset < len(info) or info[offset][1] != 0:
            return strip  # past the end, or a wrapped line's continuation
        glyph = self.gutter_glyph(info[offset][0])
        if not glyph:
            return strip
        # the gutter is `NUMBER` and a two-cell margin: the glyph takes the margin's first cell
        at = self.gutter_width - 2
        cell = next(iter(strip.crop(at, at + 1)), None)
        style = (cell.style if cell is not None and cell.style else Style()) + Style(bold=True)
        colour = self.app.theme_variables.get("error" if glyph == BREAKPOINT_GLYPH else "accent")
        if colour:
            style += Style(color=colour)
        return Strip.join([strip.crop(0, at), Strip([Segment(glyph, style)], 1), strip.crop(at + 1)])

    def _variable_style(self, name: str) -> Style:
        colour = self.app.theme_variables.get(name)
        return Style(bgcolor=colour) if colour else Style(reverse=True)

    def set_marks(self, step_lines: set[int], problems: dict[int, str]) -> None:
        if step_lines == self.step_lines and problems == self.problem_lines:
            return
        self.step_lines, self.problem_lines = step_lines, problems
        self._line_cache.clear()
        self.refresh()

    def set_debug_marks(self, breakpoints: set[int], paused: set[int]) -> None:
        """Mark breakpoint lines and the paused step's lines (0-based)."""
        if breakpoints == self.breakpoint_lines and paused == self.pause_lines:
            return
        self.breakpoint_lines, self.pause_lines = breakpoints, paused
        self._line_cache.clear()
        self.refresh()

    def breakpoint_note(self, line: int) -> str | None:
        """Where a breakpoint at (1-based) `line` stops when the line has no step of its own (FROM scratch)."""
        from workbench.debug.stepless import stepless_froms

        target = stepless_froms(self.text).get(line)
        return target.note(line) if target is not None else None

    def reload(self) -> None:
        """Take the file's new text from disk (it changed outside the editor)."""
        if self.path is None:
            return
        try:
            text = self.path.read_text()
        except OSError:
            return
        if text != self.text:
            self.load_text(text)

    def action_save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.write_text(self.text)
        except OSError as e:
            self.notify(f"could not save {self.path}: {e.strerror}", severity="error")
            return
        self.post_message(self.Saved(self.path))
