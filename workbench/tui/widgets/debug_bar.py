"""The debugger's bar: where the build is paused and what the step sees (env, workdir, user, mounts)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.widgets import Static

KEYS = "F5/c continue · F10/s next · F4/e shell · d diff · f files · A abort"


def describe(info: dict[str, Any]) -> str:
    """Rich markup for a pause's `info()`: a headline, then what the step sees."""
    reason = info.get("reason", "")
    where = f" · Dockerfile line {info['line']}" if "line" in info else ""
    if reason == "error":
        head = f"[b]✘ failed[/] {escape(info.get('step', ''))}{where}"
    else:
        why = "breakpoint" if reason == "breakpoint" else "next"
        head = f"[b]⏸ paused before[/] {escape(info.get('step', ''))}{where} ({why})"
    lines = [head]
    if info.get("error"):
        lines.append(f"[b]error:[/] {escape(str(info['error']))}")
    if "command" in info:
        lines.append(f"user {escape(str(info['user']))} · workdir {escape(str(info['workdir']))} · "
                     f"mounts: {escape(', '.join(info['mounts']) or 'none')}")
        lines.append(f"env: {escape(' '.join(info['env']) or 'none')}")
    lines.append(f"[dim]{KEYS}[/]")
    return "\n".join(lines)


class DebugBar(Static):
    """Hidden while the build runs; `show(info)` at a pause, `show(None)` when it goes on."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.text = ""

    def show(self, info: dict[str, Any] | None) -> None:
        self.text = describe(info) if info is not None else ""
        self.update(self.text)
        self.display = info is not None
