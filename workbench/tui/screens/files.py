"""`f`: a finished step's filesystem as a tree (directories load when opened), and the selected file beside it.

The view (a read-only mount of the step's snapshots) is opened by a worker that holds it until the screen
closes, then releases it before the screen is gone: no mount outlives the screen. Listing and reading are
workers too; what they find reaches the screen as messages.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static, Tree
from textual.widgets.tree import NodeID, TreeNode, UnknownNodeID
from textual.worker import get_current_worker

from workbench.debug.fsview import Entry, entries, read_file
from workbench.results import ViewError

CONTENT_LIMIT = 64 * 1024
"""The most of a file shown (the rest is cut, and says so)."""
BINARY_PROBE = 8192
"""A NUL byte in this many first bytes makes a file binary (as git and grep decide)."""
RELEASE_WAIT_S = 10.0
"""How long closing the screen waits for the view to be unmounted."""

ViewOpener = Callable[[], AbstractContextManager[Path]]
"""Opens the step's filesystem: a context manager that yields its root (read-only) and releases it on exit."""


@dataclass
class FileNode:
    """What a tree node stands for: a path in the step's filesystem (`entry` None for `/`)."""

    path: str
    entry: Entry | None = None
    loaded: bool = False


def label(entry: Entry) -> Text:
    """A tree label: the name (dirs end in `/`, symlinks show their target), then mode and size, dimmed."""
    text = Text(entry.name + ("/" if entry.is_dir else ""), style="bold" if entry.is_dir else "")
    if entry.target is not None:
        text.append(f" -> {entry.target}", style="italic")
    text.append(f"  {stat.filemode(entry.mode)} {entry.size:,}", style="dim")
    return text


def describe_content(path: str, data: bytes, size: int) -> str:
    """What the content pane shows for a file read (up to CONTENT_LIMIT + 1 bytes of it)."""
    if b"\0" in data[:BINARY_PROBE]:
        return f"{path}: binary file, {size:,} bytes (not shown)"
    text = data[:CONTENT_LIMIT].decode("utf-8", "replace")
    if len(data) > CONTENT_LIMIT:
        text += f"\n… (the first {CONTENT_LIMIT // 1024} kB of {size:,} bytes shown)"
    return text


class FileTree(Tree[FileNode]):
    """The step's filesystem; a directory lists its entries the first time it is opened."""


class FilesScreen(ModalScreen[None]):
    """The tree on the left, the selected file's content on the right; esc closes (and releases the view)."""

    CSS_PATH = "files.tcss"
    BINDINGS = [Binding("escape,q", "close", "Close")]

    class ViewOpened(Message):
        """The step's filesystem is mounted at `root` (or could not be: `error`)."""

        def __init__(self, root: Path | None, error: str = "") -> None:
            super().__init__()
            self.root = root
            self.error = error

    class Listed(Message):
        """A directory's entries (or why they could not be read)."""

        def __init__(self, node_id: NodeID, found: list[Entry], error: str = "") -> None:
            super().__init__()
            self.node_id = node_id
            self.found = found
            self.error = error

    class FileRead(Message):
        """A file's content as the pane shows it."""

        def __init__(self, path: str, text: str) -> None:
            super().__init__()
            self.path = path
            self.text = text

    def __init__(self, title: str, open_view: ViewOpener) -> None:
        super().__init__()
        self.title_text = title
        self.open_view = open_view
        self.root: Path | None = None
        """Where the step's filesystem is mounted while the screen is open."""
        self.shown_path = ""
        self.shown_text = ""
        """The file in the content pane and what it says (for tests)."""
        self._view_closing = threading.Event()
        self._view_released = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(id="files-box"):
            yield Static(Text(f"files of {self.title_text}", style="bold"), id="files-title")
            with Horizontal(id="files-main"):
                tree = FileTree("/", FileNode("/"), id="files-tree")
                tree.auto_expand = True
                yield tree
                with VerticalScroll(id="files-scroll"):
                    yield Static("", id="files-path")
                    yield Static("mounting …", id="files-content")

    def on_mount(self) -> None:
        tree = self.query_one(FileTree)
        tree.border_title = "filesystem"
        tree.border_subtitle = "enter: open / show · esc: close"
        tree.focus()
        self._hold_view()

    # -- the view: opened and held by one worker thread, released when the screen goes ------------------

    @work(thread=True, group="files-view")
    def _hold_view(self) -> None:
        worker = get_current_worker()
        try:
            with self.open_view() as root:
                self.post_message(self.ViewOpened(root))
                # until the screen closes, or the app ends (it cancels every worker, then waits for them)
                while not self._view_closing.wait(0.1) and not worker.is_cancelled:
                    pass
        except ViewError as e:
            self.post_message(self.ViewOpened(None, str(e)))
        except Exception as e:  # a mount that failed: shown on the screen, not fatal
            self.post_message(self.ViewOpened(None, f"{type(e).__name__}: {e}"))
        finally:
            self._view_released.set()

    def on_unmount(self) -> None:
        self._release()

    def _release(self) -> None:
        self._view_closing.set()
        self.root = None
        # unmounting takes milliseconds; waiting here means no mount is left once the screen is gone
        self._view_released.wait(RELEASE_WAIT_S)

    @on(ViewOpened)
    def _view_opened(self, event: ViewOpened) -> None:
        if event.root is None:
            self._content("", f"cannot open the filesystem: {event.error}")
            return
        if self._view_closing.is_set():
            return
        self.root = event.root
        self._content("", "select a file to see it")
        self.query_one(FileTree).root.expand()
        self._list(self.query_one(FileTree).root)

    # -- listing ---------------------------------------------------------------------------------------

    @on(Tree.NodeExpanded)
    def _expanded(self, event: Tree.NodeExpanded[FileNode]) -> None:
        data = event.node.data
        if data is not None and not data.loaded and self.root is not None:
            self._list(event.node)

    def _list(self, node: TreeNode[FileNode]) -> None:
        assert node.data is not None and self.root is not None
        node.data.loaded = True
        self._list_dir(self.root, node.id, node.data.path)

    @work(thread=True, group="files-list")
    def _list_dir(self, root: Path, node_id: NodeID, path: str) -> None:
        try:
            found = entries(root, path)
        except (ViewError, OSError) as e:
            self.post_message(self.Listed(node_id, [], str(e)))
            return
        self.post_message(self.Listed(node_id, found))

    @on(Listed)
    def _listed(self, event: Listed) -> None:
        tree = self.query_one(FileTree)
        try:
            node = tree.get_node_by_id(event.node_id)
        except UnknownNodeID:
            return
        assert node.data is not None
        if event.error:
            node.add_leaf(Text(f"({event.error})", style="dim italic"))
            return
        base = node.data.path.rstrip("/")
        for entry in event.found:
            data = FileNode(f"{base}/{entry.name}", entry)
            if entry.is_dir:
                node.add(label(entry), data)
            else:
                node.add_leaf(label(entry), data)
        if not event.found:
            node.add_leaf(Text("(empty)", style="dim italic"))

    # -- reading ---------------------------------------------------------------------------------------

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected[FileNode]) -> None:
        data = event.node.data
        if data is None or data.entry is None or data.entry.is_dir or self.root is None:
            return
        self._content(data.path, "reading …")
        self._read(self.root, data.path)

    @work(thread=True, exclusive=True, group="files-read")
    def _read(self, root: Path, path: str) -> None:
        try:
            data = read_file(root, path, CONTENT_LIMIT + 1)
            size = entries(root, path)[0].size  # of the file itself, a symlink followed
        except (ViewError, OSError) as e:
            text = f"cannot show it: {e}"
        else:
            text = describe_content(path, data, size)
        self.post_message(self.FileRead(path, text))

    @on(FileRead)
    def _file_read(self, event: FileRead) -> None:
        if event.path == self.shown_path:
            self._content(event.path, event.text)

    def _content(self, path: str, text: str) -> None:
        self.shown_path, self.shown_text = path, text
        self.query_one("#files-path", Static).update(Text(path, style="bold"))
        self.query_one("#files-content", Static).update(Text(text))

    def action_close(self) -> None:
        self.dismiss(None)
