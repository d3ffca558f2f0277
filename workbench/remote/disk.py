"""`workbench du` and `workbench prune` on a BuildKit daemon (`--addr`): its DiskUsage and Prune calls, printed
as `docker buildx du` / `prune` print them (the same table as the local engine's)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from workbench.gc.format import du_summary, du_table, format_prune
from workbench.gc.model import Orphans, PruneResult, Record, Usage
from workbench.gc.units import human_duration, human_size
from workbench.remote.address import Address
from workbench.remote.control import Control, UsageRecord


def remote_du(address: Address, verbose: bool = False) -> str:
    """What `workbench du --addr A [--verbose]` prints: the daemon's records, least recently used first, then
    Shared / Private (when some are shared), Reclaimable and Total."""
    with Control(address) as control:
        records = control.disk_usage()
    pairs = sorted(((r, _record(r)) for r in records), key=lambda p: (p[1].last_used, p[1].created, p[0].id))
    rows = [row for _, row in pairs]
    lines = (_verbose([r for r, _ in pairs]) if verbose else du_table(rows, time.time())) if rows else []
    lines += du_summary(Usage(rows, Orphans(), running=False))
    return "\n".join(lines) + "\n"


def remote_prune(address: Address, all: bool = False, keep_storage: int | None = None,
                 until: float | None = None, verbose: bool = False) -> str:
    """What `workbench prune --addr A [--all] [--keep-storage SIZE] [--filter until=D]` prints: the records the
    daemon removed, then `Total:`."""
    with Control(address) as control:
        removed = control.prune(all=all, keep_duration_s=until or 0, reserved_space=keep_storage or 0)
    if verbose:
        return "\n".join([*_verbose(removed), f"{'Total:':<16}{human_size(sum(r.size for r in removed))}"]) + "\n"
    return format_prune(PruneResult(records=[_record(r) for r in removed], freed=sum(r.size for r in removed)))


def _record(r: UsageRecord) -> Record:
    """A daemon's record as the local `du` / `prune` tables show one."""
    return Record(r.id, r.record_type, r.description, r.size, _ts(r.last_used_at), _ts(r.created_at),
                  shared=r.shared, in_use=r.in_use)


def _ts(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


def _ago(record: UsageRecord) -> str:
    used = _ts(record.last_used_at)
    return human_duration(time.time() - used) + " ago" if used else ""


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
