"""What each layer does to the image's filesystem, as dive shows it.

A layer is a stream of entries in image-layer terms (a file, a directory, a link, a whiteout that removes a path
below, an opaque marker that hides a directory's contents below). Stacked bottom first they give, per layer:
the paths it adds, changes (a non-directory written over one below; a directory whose mode or owner differs)
and removes (whiteouts, opaque directories, a file put where a directory was: every path hidden counts), the
bytes of the regular files it writes (`size`), and the bytes of those files that a later layer overwrites or
removes (`wasted`, with the paths). The image's efficiency is `1 - wasted / total`, where `total` is the sum of
the layers' sizes: 1.0 when no byte written is later thrown away (dive scores the same waste per path).
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"
WHITEOUT, OPAQUE = "whiteout", "opaque"
ADDED, CHANGED, REMOVED = "added", "changed", "removed"


@dataclass(frozen=True)
class LayerEntry:
    """One entry of a layer: `path` absolute and normalised; `kind` FILE, DIR, LINK, OTHER, WHITEOUT (the path
    below is removed) or OPAQUE (what the directory held below is hidden); `size` for regular files."""

    path: str
    kind: str
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Change:
    """A path a layer adds, changes or removes; `size`: its bytes (a removed file's old size); `entry`: what the
    path is (FILE, DIR, LINK or OTHER; what it was, when removed)."""

    kind: str
    path: str
    size: int = 0
    is_dir: bool = False
    entry: str = FILE


@dataclass(frozen=True)
class Waste:
    """Bytes a layer wrote at `path` that layer `by` (1-based) overwrote or removed (`how`)."""

    path: str
    size: int
    by: int
    how: str


@dataclass
class Layer:
    """One layer: the step that made it (and its Dockerfile line when known), its digest when known, and what
    it does; `index` counts from 1, bottom first."""

    index: int
    step: str
    line: int | None = None
    digest: str | None = None
    size: int = 0
    changes: list[Change] = field(default_factory=list)
    waste: list[Waste] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    @property
    def added(self) -> int:
        return self.count(ADDED)

    @property
    def changed(self) -> int:
        return self.count(CHANGED)

    @property
    def removed(self) -> int:
        return self.count(REMOVED)

    @property
    def wasted(self) -> int:
        return sum(w.size for w in self.waste)

    @property
    def wasted_paths(self) -> list[str]:
        return sorted({w.path for w in self.waste})


@dataclass
class LayerReport:
    """The layers of one image, bottom first, and its efficiency."""

    image: str
    layers: list[Layer]

    @property
    def total(self) -> int:
        """Bytes of the regular files every layer writes, all counted."""
        return sum(layer.size for layer in self.layers)

    @property
    def wasted(self) -> int:
        return sum(layer.wasted for layer in self.layers)

    @property
    def efficiency(self) -> float:
        """`1 - wasted / total` (1.0 for an image with no file bytes)."""
        return 1.0 - self.wasted / self.total if self.total else 1.0


@dataclass(frozen=True)
class LayerSource:
    """A layer to analyse: who made it, and its entries (read when the analysis reaches it)."""

    step: str
    entries: Callable[[], Iterable[LayerEntry]]
    line: int | None = None
    digest: str | None = None


@dataclass
class _Node:
    kind: str
    size: int
    mode: int
    uid: int
    gid: int
    layer: int  # the 0-based layer that wrote it


class _View:
    """The filesystem stacked so far: path → node, and each directory's children."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}
        self.children: dict[str, set[str]] = {}

    def below(self, path: str) -> list[str]:
        """Every path under `path` (not itself)."""
        out: list[str] = []
        stack = list(self.children.get(path, ()))
        while stack:
            p = stack.pop()
            out.append(p)
            stack.extend(self.children.get(p, ()))
        return out

    def put(self, path: str, node: _Node) -> None:
        if path not in self.nodes:
            self.children.setdefault(_parent(path), set()).add(path)
        self.nodes[path] = node

    def drop(self, path: str) -> None:
        del self.nodes[path]
        self.children.pop(path, None)
        siblings = self.children.get(_parent(path))
        if siblings is not None:
            siblings.discard(path)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def analyze(image: str, sources: Sequence[LayerSource]) -> LayerReport:
    """Stack `sources` bottom first and report what each layer does."""
    view = _View()
    layers: list[Layer] = []
    for i, source in enumerate(sources):
        layer = Layer(i + 1, source.step, source.line, source.digest)
        layers.append(layer)
        _apply(view, i, source.entries(), layers)
    return LayerReport(image, layers)


def _apply(view: _View, i: int, entries: Iterable[LayerEntry], layers: list[Layer]) -> None:
    layer = layers[i]
    own: dict[str, LayerEntry] = {}
    gone: dict[str, None] = {}  # paths below that this layer hides, in the order found
    for e in entries:
        if e.kind == WHITEOUT:
            if e.path in view.nodes:
                gone[e.path] = None
                gone.update(dict.fromkeys(view.below(e.path)))
        elif e.kind == OPAQUE:
            gone.update(dict.fromkeys(view.below(e.path)))
        else:
            own[e.path] = e
    changes: list[Change] = []
    for path, e in own.items():
        old = view.nodes.get(path)
        if e.kind == FILE:
            layer.size += e.size
        if old is None:
            changes.append(Change(ADDED, path, e.size, e.kind == DIR, e.kind))
            continue
        gone.pop(path, None)  # replaced, not removed
        if old.kind == DIR and e.kind != DIR:  # a file where a directory was hides all it held
            gone.update(dict.fromkeys(view.below(path)))
        if e.kind != DIR or old.kind != DIR or (e.mode, e.uid, e.gid) != (old.mode, old.uid, old.gid):
            changes.append(Change(CHANGED, path, e.size, e.kind == DIR, e.kind))
        if old.kind == FILE:
            layers[old.layer].waste.append(Waste(path, old.size, i + 1, "overwritten"))
    for path in gone:
        old = view.nodes.get(path)
        if old is None:
            continue
        changes.append(Change(REMOVED, path, old.size, old.kind == DIR, old.kind))
        if old.kind == FILE:
            layers[old.layer].waste.append(Waste(path, old.size, i + 1, "removed"))
    for path in sorted(gone, key=len, reverse=True):  # children before their parents
        if path in view.nodes:
            view.drop(path)
    for path, e in own.items():
        view.put(path, _Node(e.kind, e.size, e.mode, e.uid, e.gid, i))
    layer.changes = sorted(changes, key=lambda c: c.path)


def kind_of(mode: int) -> str:
    """FILE, DIR, LINK or OTHER for a stat mode."""
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return LINK
    return OTHER
