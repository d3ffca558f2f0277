"""The text of `workbench du` and `workbench prune`, as `docker buildx du` / `prune` print it."""

from __future__ import annotations

import time

from workbench.gc.model import PruneResult, Record, Usage
from workbench.gc.units import human_duration, human_size


def du_table(rows: list[Record], now: float) -> list[str]:
    """The ID / RECLAIMABLE / SIZE / LAST ACCESSED table of `rows`, as `docker buildx du` prints it."""
    lines = [f"{'ID':<48}{'RECLAIMABLE':<16}{'SIZE':<16}LAST ACCESSED"]
    for r in rows:
        ident = r.id + ("*" if r.shared else "")
        ago = human_duration(now - r.last_used) + " ago" if r.last_used else ""
        lines.append(f"{ident:<48}{str(r.reclaimable).lower():<16}{human_size(r.size):<16}{ago}")
    return lines


def _verbose(rows: list[Record], now: float) -> list[str]:
    lines: list[str] = []
    for r in rows:
        lines.append(f"ID:\t\t{r.id}")
        if r.created:
            lines.append(f"Created at:\t{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.created))}")
        lines += [
            "Mutable:\t" + str(r.kind in ("cachemount", "git")).lower(),
            f"Reclaimable:\t{str(r.reclaimable).lower()}",
            f"Shared:\t\t{str(r.shared).lower()}",
            f"Size:\t\t{human_size(r.size)}",
            f"Description:\t{r.description}",
            f"Last used:\t{human_duration(now - r.last_used)} ago",
            f"Type:\t\t{r.kind}",
            "",
        ]
    return lines


def format_du(usage: Usage, verbose: bool = False) -> str:
    """`docker buildx du` text: one row per record (least recently used first), then the summary."""
    now = time.time()
    rows = sorted(usage.records, key=lambda r: (r.last_used, r.created, r.id))
    lines = _verbose(rows, now) if verbose else (du_table(rows, now) if rows else [])
    lines += du_summary(usage)
    o = usage.orphans
    if o.count:
        parts = [(len(o.snapshots), "snapshot dirs without a record"), (len(o.scratch), "stale temp files"),
                 (len(o.blobs), "unreferenced blobs"), (len(o.records), "records with missing snapshots"),
                 (len(o.mounts), "leftover mounts")]
        lines.append("Orphans: " + ", ".join(f"{n} {what}" for n, what in parts if n) + " (workbench prune)")
    if usage.running:
        lines.append("Builds are running: records they may use are not reclaimable.")
    return "\n".join(lines) + "\n"


def du_summary(usage: Usage) -> list[str]:
    """The lines after the records: Shared / Private (when some are shared), Orphans, Reclaimable, Total."""
    summary: list[tuple[str, int]] = []
    if usage.shared > 0:
        summary += [("Shared:", usage.shared), ("Private:", usage.private)]
    if usage.orphans.count:
        summary.append(("Orphans:", usage.orphans.size))
    summary += [("Reclaimable:", usage.reclaimable), ("Total:", usage.total)]
    return [f"{label:<16}{human_size(n)}" for label, n in summary]


def format_prune(result: PruneResult, verbose: bool = False) -> str:
    """`docker buildx prune` text: the removed records, then `Total:`."""
    if result.skipped:
        return "Skipped: other builds are running.\n"
    now = time.time()
    lines = (_verbose(result.records, now) if verbose else du_table(result.records, now)) if result.records else []
    if result.orphans:
        lines.append(f"{'Orphans:':<16}{human_size(result.orphan_bytes)} ({result.orphans} removed)")
    lines.append(f"{'Total:':<16}{human_size(result.freed)}")
    return "\n".join(lines) + "\n"
