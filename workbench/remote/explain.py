"""Miss reasons for a remote build of our own graph: workbench's own reckoning, not the daemon's.

The daemon keeps the cache and only says whether a step was CACHED. For a step it runs, this module computes the
key parts a local build would (the op digest, its inputs' keys, the checksums of the context files a COPY/ADD or a
bind mount reads) and compares them, as `workbench.solver.why` does, with the parts of the same step the last time
this root saw it run on the same engine (a small index per engine and Dockerfile under ROOT/why/remote). Nothing
is computed for a step the daemon reports as cached, so a fully cached build reads no context file. The reason
says it is ours: the daemon's cache may differ (entries evicted, other clients' builds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.llb.ops import Copy, ExecOp, FileOp, LocalSource, Vertex, rerun_roots
from workbench.solver import why

OURS = "workbench's reckoning"
"""How a remote step's miss reason starts: the reason comes from our key parts, not from the daemon."""
NO_GRAPH = ("built with the daemon's Dockerfile frontend (--frontend dockerfile.v0): workbench has no graph of "
            "its own for this build, so it gives no miss reasons")


def _index_path(root: Path, engine: str, scope: str) -> Path:
    digest = hashlib.sha256(f"{engine}\n{scope}".encode()).hexdigest()[:24]
    return root / "why" / "remote" / f"{digest}.json"


class RemoteExplainer:
    """Miss reasons for the steps of `vertex` that the daemon at `engine` runs; `scope` is the Dockerfile's path."""

    def __init__(self, root: Path, engine: str, scope: str, vertex: Vertex, context: Path,
                 no_cache: bool = False) -> None:
        self.root, self.engine, self.scope = root, engine, scope
        self.context = context
        self.no_cache = no_cache
        self.vertices = {v.digest: v for v in vertex.walk()}
        self._reruns = rerun_roots(vertex, no_cache)  # the step at or below each that ignores the cache, if any
        self._keys: dict[str, tuple[str, dict[str, object]]] = {}
        self._index: dict[str, Any] | None = None
        self._missed: dict[str, str] = {}  # key -> name of the steps that ran in this build
        self._excluded: dict[str, Any] = {}

    # -- keys ------------------------------------------------------------------------------------------

    def _context_excluded(self, src: Vertex) -> Any:
        assert isinstance(src.op, LocalSource)
        if src.digest not in self._excluded:
            from workbench.fsutil.patterns import IgnoreMatcher

            matcher = IgnoreMatcher(list(src.op.excludes))
            self._excluded[src.digest] = matcher.excluded if matcher else None
        return self._excluded[src.digest]

    def _checksum(self, src: Vertex, action: Copy) -> tuple[str, dict[str, str]]:
        from workbench.solver.checksum import copy_checksum
        from workbench.solver.fileops import FileActionError

        try:
            return copy_checksum(self.context, action, self._context_excluded(src))
        except (FileActionError, OSError) as e:  # the daemon tells the build's error; the key just says so
            return f"unreadable: {e}", {}

    def key(self, v: Vertex) -> tuple[str, dict[str, object]]:
        """`v`'s key and its parts, as the local solver computes them (remote sources by their op alone)."""
        if v.digest in self._keys:
            return self._keys[v.digest]
        components: dict[str, object] = {"op": v.digest}
        if isinstance(v.op, LocalSource):
            self._keys[v.digest] = ("local:" + v.op.name, components)
            return self._keys[v.digest]
        input_keys = [self.key(i)[0] for i in v.inputs]
        parts = [v.digest, *input_keys]
        components["text"] = why.instruction_text(v)
        components["detail"] = why.op_detail(v)
        components["inputs"] = [{"name": i.name, "key": k} for i, k in zip(v.inputs, input_keys, strict=True)]
        if isinstance(v.op, ExecOp):
            mount_parts = []
            for n, m in enumerate(v.op.mounts):
                if m.type == "bind" and m.input >= 0 and isinstance(v.inputs[m.input].op, LocalSource):
                    copy = Copy(src_input=m.input, src=m.source, dest="/", allow_wildcard=False)
                    mount_parts.append(f"mount{n}:{self._checksum(v.inputs[m.input], copy)[0]}")
            if mount_parts:
                parts += mount_parts
                components["mounts_key"] = hashlib.sha256("\n".join(mount_parts).encode()).hexdigest()
        if isinstance(v.op, FileOp):
            files: dict[str, str] = {}
            for n, action in enumerate(v.op.actions):
                if isinstance(action, Copy) and isinstance(v.inputs[action.src_input].op, LocalSource):
                    checksum, read = self._checksum(v.inputs[action.src_input], action)
                    parts.append(f"{n}:{checksum}")
                    files.update(read)
            if files:
                components["files"] = files
        key = "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()
        self._keys[v.digest] = (key, components)
        return self._keys[v.digest]

    # -- reasons ---------------------------------------------------------------------------------------

    def _last(self, v: Vertex) -> tuple[str, dict[str, Any]] | None:
        if self._index is None:
            try:
                self._index = dict(json.loads(_index_path(self.root, self.engine, self.scope).read_text()))
            except (OSError, ValueError, TypeError):
                self._index = {}
        for lineage in why.lineages(self.scope, v):
            found = self._index.get(lineage)
            if isinstance(found, dict) and isinstance(found.get("components"), dict):  # else: not one of ours
                return str(found.get("key", "")), found["components"]
        return None

    def started(self, digest: str) -> tuple[str, Mapping[str, object] | None]:
        """The miss reason and key parts of our step `digest`, which the daemon has started to run ("" and None
        for what is not a step of ours)."""
        v = self.vertices.get(digest)
        if v is None or isinstance(v.op, LocalSource):
            return "", None
        from workbench.solver.why import shown_parts

        key, components = self.key(v)
        ignore = why.ignored_by(v, self.no_cache)
        last = None if ignore else self._last(v)
        old_key, old = last if last is not None else ("", None)
        if not v.inputs and not ignore and (old is None or old_key == key):
            return "", shown_parts(components)  # a source's start is the daemon's cache request (a resolve)
        below = self._reruns.get(v.digest)
        forced = why.rerun_below(below, self.no_cache) if below is not None and not ignore and old_key == key else ""
        reason = why.explain(old, components, old_key, key, self._missed, ignore, forced)
        self._missed[key] = v.name
        for i in v.inputs:  # an input the daemon had cached though our key for it changed: say what changed
            if f"input changed: {i.name}" in reason and (change := self._change(i)):
                reason = reason.replace(f"input changed: {i.name}", f"input changed: {i.name}: {change}")
        if reason == "never built before":
            reason = f"no earlier run of this step on {self.engine} is recorded in this root"
        elif reason == "its cache record is gone (pruned or lost)":
            reason = "unchanged since its last run here; the daemon's cache no longer had it (evicted or pruned)"
        return f"{OURS}: {reason}", shown_parts(components)

    def _change(self, v: Vertex) -> str:
        """What changed in `v`'s own key parts since its last record ("" if it has none, or no change)."""
        last = self._last(v)
        if last is None or isinstance(v.op, LocalSource):
            return ""
        key, components = self.key(v)
        return "" if last[0] == key else why.explain(last[1], components, last[0], key, self._missed, "")

    def record(self, seen: list[str]) -> None:
        """Keep the key parts computed for the steps in `seen` (our digests, run or cached) for the next build's
        reasons; a step whose key was not needed is left as last recorded."""
        if not any(d in self._keys for d in seen):
            return
        self._last(next(iter(self.vertices.values())))  # the index, loaded
        index = dict(self._index or {})
        for digest in seen:
            v = self.vertices.get(digest)
            if v is None or isinstance(v.op, LocalSource) or digest not in self._keys:
                continue
            key, components = self._keys[digest]
            for lineage in dict.fromkeys(why.lineages(self.scope, v)):
                index[lineage] = {"key": key, "components": components}
        from workbench.state_root import make_private_dir, write_private

        path = _index_path(self.root, self.engine, self.scope)
        make_private_dir(path.parent)
        write_private(path, json.dumps(index, sort_keys=True))


REMOTE_NOTE = (f"Miss reasons are {OURS} from its own key parts, against this root's last run of each step on "
               "this engine; the daemon's cache may differ (entries evicted, other clients' builds).")


def save_remote_build(root: Path, dockerfile: Path, engine: str, fold: Any,
                      explainer: RemoteExplainer | None) -> None:
    """Keep the build `fold` saw for `workbench inspect why` (and, with `explainer`, the key parts of the steps
    that ran for the next build's reasons); `explainer` None: the daemon's frontend built it, no graph of ours."""
    from workbench.solver.explain import save_last_build

    try:
        _save(root, dockerfile, engine, fold, explainer, save_last_build)
    except OSError:
        pass  # the record only serves `inspect why` and later reasons: the build itself went as it went


def _save(root: Path, dockerfile: Path, engine: str, fold: Any, explainer: RemoteExplainer | None,
          save_last_build: Any) -> None:
    order = {d: n for n, d in enumerate(explainer.vertices)} if explainer is not None else {}
    steps: list[dict[str, Any]] = []
    for n, v in enumerate(fold.vertices.values()):
        if not v.state or v.id.startswith("internal:"):
            continue
        if explainer is not None:
            ours = explainer.vertices.get(v.id)
            if ours is None or isinstance(ours.op, LocalSource):
                continue
        cached = v.state == "cached" or v.cached_late
        ours = explainer.vertices.get(v.id) if explainer is not None else None
        resolved = ours is not None and not ours.inputs and not cached and not v.reason and v.state == "completed"
        steps.append({"name": v.name, "digest": v.id, "cached": cached, "resolved": resolved, "reason": v.reason,
                      "order": order.get(v.id, n)})
    if explainer is not None:
        explainer.record([v.id for v in fold.vertices.values() if v.state in ("completed", "cached")])
    save_last_build(root, dockerfile, steps, engine=engine, note=REMOTE_NOTE if explainer is not None else NO_GRAPH)
