"""What `workbench du` and `workbench prune` print, from their command-line arguments."""

from __future__ import annotations

from pathlib import Path

from workbench.gc.format import format_du, format_prune
from workbench.gc.pruning import prune
from workbench.gc.units import parse_duration, parse_size
from workbench.gc.usage import du


def main_du(root: Path, verbose: bool = False) -> str:
    """What `workbench du [--verbose]` prints."""
    return format_du(du(root), verbose)


def main_prune(root: Path, all: bool = False, keep_storage: str | int | None = None,
               until: str | float | None = None, verbose: bool = False) -> str:
    """What `workbench prune [--all] [--keep-storage SIZE] [--filter until=DURATION]` prints; sizes and
    durations may be given as text (`2GB`, `24h`). ValueError for a malformed one."""
    keep = parse_size(keep_storage) if isinstance(keep_storage, str) else keep_storage
    secs = parse_duration(until) if isinstance(until, str) else until
    return format_prune(prune(root, all=all, keep_storage=keep, until=secs), verbose)
