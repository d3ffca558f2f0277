"""`workbench du` and `workbench prune` on a BuildKit daemon (`--addr`): its DiskUsage and Prune calls, printed
as `docker buildx du` / `prune` print them (the same table as the local engine's)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from workbench.gc.units import human_duration, human_size
from workbench.remote.address import Address
from workbench.remote.control import Control, UsageRecord


def remote_du(address: Address, verbose: bool = False) -> str:
    """What `workbench du --addr A [--verbose]` prints: the daemon's records, least recently used first, then
    Shared / Private (when some are shared), Reclaimable and Total."""
    with Control(address) as control:
        records = control.disk_usage()
    rows = sorted(records, key=lambda r: (_ts(r.last_used_at), _ts(r.created_at), r.id))
    lines = (_verbose(rows) if verbose else _table(rows)) if rows else []
    shared = sum(r.size for r in rows if r.shared)
    total = sum(r.size for r in rows)
    summary: list[tuple[str, int]] = []
    if shared:
        summary += [("Shared:", shared), ("Private:", total - shared)]
    summary += [("Reclaimable:", sum(r.size for r in rows if not r.in_use)), ("Total:", total)]
    lines += [f"{label:<16}{human_size(n)}" for label, n in summary]
    return "\n".join(lines) + "\n"


def remote_prune(address: Address, all: bool = False, keep_storage: int | None = None,
                 until: float | None = None, verbose: bool = False) -> str:
    """What `workbench prune --addr A [--all] [--keep-storage SIZE] [--filter until=D]` prints: the records the
    daemon removed, then `Total:`."""
    with Control(address) as control:
        removed = control.prune(all=all, keep_duration_s=until or 0, reserved_space=keep_storage or 0)
    lines = (_verbose(removed) if verbose else _table(removed)) if removed else []
    lines.append(f"{'Total:':<16}{human_size(sum(r.size for r in removed))}")
    return "\n".join(lines) + "\n"


def _ts(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


def _ago(record: UsageRecord) -> str:
    used = _ts(record.last_used_at)
    return human_duration(time.time() - used) + " ago" if used else ""


def _table(rows: Iterable[UsageRecord]) -> list[str]:
    lines = [f"{'ID':<48}{'RECLAIMABLE':<16}{'SIZE':<16}LAST ACCESSED"]
    for r in rows:
        ident = r.id + ("*" if r.shared else "")
        lines.append(f"{ident:<48}{str(not r.in_use).lower():<16}{human_size(r.size):<16}{_ago(r)}")
    return lines


def _verbose(rows: Iterable[UsageRecord]) -> list[str]:
    lines: list[str] = []
    for r in rows:
        lines.append(f"ID:\t\t{r.id}")
        if r.parents:
            lines.append(f"Parent:\t\t{', '.join(r.parents)}")
        if r.created_at is not None:
            lines.append(f"Created at:\t{r.created_at.astimezone().strftime('%Y-%m-%d %H:%M:%S')}")
        lines += [f"Mutable:\t{str(r.mutable).lower()}", f"Reclaimable:\t{str(not r.in_use).lower()}",
                  f"Shared:\t\t{str(r.shared).lower()}", f"Size:\t\t{human_size(r.size)}",
                  f"Description:\t{r.description}", f"Usage count:\t{r.usage_count}",
                  f"Last used:\t{_ago(r)}", f"Type:\t\t{r.record_type}", ""]
    return lines
