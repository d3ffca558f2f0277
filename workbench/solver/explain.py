"""The last build of each Dockerfile, step by step with miss reasons, for `workbench inspect why`."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any


def _record_path(root: Path, dockerfile: Path) -> Path:
    digest = hashlib.sha256(str(dockerfile.resolve()).encode()).hexdigest()[:24]
    return root / "why" / f"{digest}.json"


def save_last_build(root: Path, dockerfile: Path, steps: list[dict[str, Any]], engine: str = "",
                    note: str = "") -> None:
    """Keep `steps` as the last build of `dockerfile` (atomically: a reader never sees half a record); `engine`
    names a remote daemon that built it, `note` says what its reasons are (or why there are none)."""
    path = _record_path(root, dockerfile)
    from workbench.state_root import make_private_dir, write_private

    make_private_dir(path.parent)
    record: dict[str, Any] = {"dockerfile": str(dockerfile.resolve()), "time": time.time(), "steps": steps}
    if engine:
        record.update(engine=engine, note=note)
    write_private(path, json.dumps(record))


def load_last_build(root: Path, dockerfile: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_record_path(root, dockerfile).read_text()))
    except (OSError, ValueError):
        return None


def format_last_build(record: dict[str, Any]) -> str:
    """One line per step: CACHED, or MISS with why."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("time", 0)))
    steps = sorted(record.get("steps") or [], key=lambda s: s.get("order", 0))
    missed = sum(1 for s in steps if not s.get("cached") and not s.get("resolved"))
    on = f" on {record['engine']}" if record.get("engine") else ""
    lines = [f"Last build of {record.get('dockerfile')}{on} at {when}: {len(steps)} steps, {missed} missed the cache"]
    if record.get("note"):
        lines.append(str(record["note"]))
    for n, step in enumerate(steps, 1):
        if step.get("cached"):
            lines.append(f"#{n} {step['name']}\n    CACHED")
        elif step.get("resolved"):  # a remote source the daemon looked up, unchanged (v0.8 never says cached)
            lines.append(f"#{n} {step['name']}\n    RESOLVED (unchanged since its last run here)")
        elif not step.get("reason"):
            lines.append(f"#{n} {step['name']}\n    RAN")
        else:
            lines.append(f"#{n} {step['name']}\n    CACHE MISS: {step.get('reason', '')}")
    return "\n".join(lines) + "\n"
