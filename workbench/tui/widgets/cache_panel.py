"""The cache panel: hit or miss for the selected step, why it missed, what its key was made of, its snapshot."""

from __future__ import annotations

from rich.markup import escape
from textual.widgets import Static

from workbench.progress.trace import ACTIVE, CACHED, PAUSED, PENDING, RUNNING
from workbench.tui.model import VertexState


def _short(digest: str, n: int = 19) -> str:
    return digest if len(digest) <= n else digest[:n] + "…"


def format_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


LOOKING_UP = None
"""`snapshot` while the cache store is asked for a cached step's snapshot."""


def describe(v: VertexState | None, snapshot_size: int | None = None, max_files: int = 40,
             snapshot: str | None = "") -> str:
    """The panel's text (Rich markup) for one step; `snapshot` is its top snapshot when the events did not tell
    it (a cached step under another cached one: looked up in the cache store), LOOKING_UP meanwhile."""
    if v is None:
        return "[dim]select a step to see its cache record[/]"
    out = [f"[b]#{v.number} {escape(v.name)}[/]"]
    if v.internal:
        out.append("internal step: not cached")
        return "\n".join(out)
    if v.state == CACHED:
        out.append("[b]CACHE HIT[/]")
    elif v.state == PENDING:
        out.append("not started yet")
    else:
        out.append("[b]CACHE MISS[/]" + {RUNNING: " (running)", PAUSED: " (paused)"}.get(v.state, ""))
        if v.miss_reason:
            out.append(f"why: {escape(v.miss_reason)}")
    if v.cache_key:
        out.append(f"key: {v.cache_key}")
    parts = v.key_parts or {}
    if parts:
        out.append("")
        out.append("[b]key parts[/]")
        if "op" in parts:
            out.append(f"  op digest: {parts['op']}")
        if parts.get("text"):
            out.append(f"  instruction: {escape(str(parts['text']))}")
        inputs = parts.get("inputs")
        if isinstance(inputs, list):
            for item in inputs:
                if isinstance(item, dict):
                    out.append(f"  input: {escape(str(item.get('name', '')))} {_short(str(item.get('key', '')), 26)}")
        for name in ("mounts_key", "remote"):
            if parts.get(name):
                out.append(f"  {name.replace('_', ' ')}: {_short(str(parts[name]), 40)}")
        files = parts.get("files")
        if isinstance(files, dict) and files:
            total = parts.get("files_total")
            total = total if isinstance(total, int) else len(files)  # events list the first few of a large context
            out.append(f"  files read ({total}):")
            for path, digest in list(files.items())[:max_files]:
                out.append(f"    {escape(str(path))}  {_short(str(digest), 26)}")
            if total > min(max_files, len(files)):
                out.append(f"    … {total - min(max_files, len(files))} more")
    out.append("")
    top = v.snapshot or snapshot
    if top:
        size = "measuring…" if snapshot_size is None else format_size(snapshot_size) if snapshot_size >= 0 else "?"
        out.append(f"[b]snapshot[/] {top} ({size})")
    elif snapshot is LOOKING_UP:
        out.append("[b]snapshot[/] looking it up in the cache store…")
    elif v.state not in (PENDING, *ACTIVE):
        out.append("[b]snapshot[/] none (no files produced or not known)")
    return "\n".join(out)


class CachePanel(Static):
    """Renders `describe()` for the selected step."""

    _shown = "\0"

    def show(self, v: VertexState | None, snapshot_size: int | None = None, snapshot: str | None = "") -> None:
        text = describe(v, snapshot_size, snapshot=snapshot)
        if text != self._shown:  # an update re-lays out the panel: only when it changed
            self._shown = text
            self.update(text)
