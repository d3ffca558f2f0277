"""What `du` reports (records, orphans, usage) and what a prune or GC removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Record:
    """One cache record as `du` shows it."""

    id: str
    kind: str  # "regular" (a step's result), "layer" (pulled base layer), "cachemount", "http", "git"
    description: str
    size: int
    last_used: float
    created: float = 0.0
    shared: bool = False
    in_use: bool = False
    key: str = ""  # the result key, for "regular" and "layer"
    snapshots: list[str] = field(default_factory=list)  # the chain, for "regular" and "layer"
    path: Path | None = None  # the dir or file, for the others

    @property
    def internal(self) -> bool:
        """Kept by a plain prune (pulled base-image layers)."""
        return self.kind == "layer"

    @property
    def reclaimable(self) -> bool:
        return not self.in_use


@dataclass
class Orphans:
    """What no record accounts for; prune removes all of it."""

    snapshots: list[str] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # temp dirs/files of dead processes
    blobs: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # keys whose snapshots are missing
    mounts: list[Path] = field(default_factory=list)  # mounts under ROOT no running build owns
    size: int = 0
    snapshot_sizes: dict[str, int] = field(default_factory=dict)  # of each snapshot in `snapshots`

    @property
    def count(self) -> int:
        return len(self.snapshots) + len(self.scratch) + len(self.blobs) + len(self.records) + len(self.mounts)


@dataclass
class Usage:
    """`du` of a build root."""

    records: list[Record]
    orphans: Orphans
    running: bool  # builds were running when this was taken
    # internals, for prune: snapshot id → size (with its blobs), → keys referring to it; blob → snapshots.
    unit_size: dict[str, int] = field(default_factory=dict)
    refs: dict[str, set[str]] = field(default_factory=dict)
    blob_owner: dict[str, str] = field(default_factory=dict)
    stale_rows: list[str] = field(default_factory=list)  # layer_blobs/size rows of snapshots not on disk
    index: tuple[int, int] | None = None  # the cache index file it was read from (CacheStore.identity)

    @property
    def shared(self) -> int:
        return sum(r.size for r in self.records if r.shared)

    @property
    def private(self) -> int:
        return sum(r.size for r in self.records if not r.shared)

    @property
    def reclaimable(self) -> int:
        return sum(r.size for r in self.records if r.reclaimable) + self.orphans.size

    @property
    def total(self) -> int:
        """Everything du accounts for: records (each snapshot once) and orphans."""
        return sum(r.size for r in self.records) + self.orphans.size


@dataclass
class PruneResult:
    """What a prune or GC removed."""

    records: list[Record] = field(default_factory=list)
    orphans: int = 0
    orphan_bytes: int = 0
    freed: int = 0  # bytes, records and orphans
    skipped: bool = False  # GC only: builds were running
