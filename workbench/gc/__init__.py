"""Disk management of a build root: `du`, `prune`, and automatic GC under a size cap.

`usage` finds what is cache and what is an orphan (`du`); `pruning` removes it; `format` prints both as
buildx does; `commands` is what the CLI runs. The build lock they wait for is `workbench.snapshot.lease`.

Prune semantics (as `docker buildx prune`): without `all`, every unused record is removed except the
"internal" ones -- for workbench the pulled base-image layers, the analogue of the image layers BuildKit
shares with the image store and of its internal/frontend records, which plain prune keeps; `all`
removes those too. `until` keeps records used within that duration; `keep_storage` removes least
recently used records only until the cache fits in that many bytes. `prune` always removes orphans.

Automatic GC (BuildKit's default policy, simplified): after a build, when the store is over its cap,
remove least recently used records until it fits -- build results, cache mounts and sources first,
base-image layers only if that was not enough. The cap is `WORKBENCH_GC_CAP` (e.g. `50MB`, `2GB`) or,
as BuildKit's default keepBytes, 10% of the size of the filesystem holding ROOT (rounded up to whole GB),
2GB when that cannot be found. It never waits: it skips while builds run.

Sizes are disk usage (allocated blocks, hard links once, mount points not crossed). Size strings parse
as docker's (`50MB` = 50 MiB, case-insensitive) and print as docker's (decimal, 4 significant digits).
"""

from workbench.gc.commands import main_du, main_prune
from workbench.gc.format import format_du, format_prune
from workbench.gc.model import Orphans, PruneResult, Record, Usage
from workbench.gc.pruning import default_cap, maybe_gc, prune, remove_orphans
from workbench.gc.units import disk_usage, human_duration, human_size, parse_duration, parse_size
from workbench.gc.usage import du, prunable, stale_mounts

__all__ = [
    "Orphans", "PruneResult", "Record", "Usage", "default_cap", "disk_usage", "du", "format_du", "format_prune",
    "human_duration", "human_size", "main_du", "main_prune", "maybe_gc", "parse_duration", "parse_size",
    "prunable", "prune", "remove_orphans", "stale_mounts",
]
