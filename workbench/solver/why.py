"""Why a step missed the cache: its key's parts compared with the last build of the same step.

Each solved step leaves a record of what went into its key (the instruction, the op's fields, its
inputs' keys, the context files it read). A miss compares the new parts with the record of the same
step in the same Dockerfile — found by stage and instruction text as written (the step's name shows ARG
and ENV values substituted), else by stage and position — and
names what changed: a file (with old and new digests), a build arg or env (old and new values), the base
image digest, a parent step that missed, the instruction itself, `--no-cache`, or "never built". A step the
debugger runs again though its result is cached says so (not "record gone").
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from workbench.llb.ops import ExecOp, FileOp, GitSource, HttpSource, ImageSource, Vertex, ignores_cache
from workbench.solver.checksum import quote_name

_STEP = re.compile(r"^\[(?:(?P<stage>[^\]]+?) )? *(?P<index>\d+)/\d+\] (?:ONBUILD )?(?P<text>.*)$", re.S)


SHOWN_FILES = 200  # files of a key listed on the event stream (the store keeps them all, for miss reasons)


def shown_parts(components: dict[str, object]) -> dict[str, object]:
    """A key's parts as events carry them: a context of 20,000 files lists its first SHOWN_FILES and the
    count, so that every view and every recorded session does not carry (and encode) all of them."""
    files = components.get("files")
    if not isinstance(files, dict) or len(files) <= SHOWN_FILES:
        return components
    from itertools import islice

    shown = dict(islice(files.items(), SHOWN_FILES))
    return {**components, "files": shown, "files_total": len(files)}


_PINNED = re.compile(r"@sha256:[0-9a-f]{64}")


def lineages(scope: str, v: Vertex) -> tuple[str, str]:
    """(by instruction text, by position) identities of `v`'s step within `scope` (the Dockerfile path)."""
    m = _STEP.match(v.name)
    if m is None:
        return f"{scope}|{instruction_text(v)}", f"{scope}|{instruction_text(v)}"
    stage = m.group("stage") or ""
    by_text = f"{scope}|{stage}|{instruction_text(v)}"
    # a vertex that shares its step's number (a `COPY --link`'s merge, an ADD's remote source) is found by
    # its text alone
    shares_number = v.hidden or isinstance(v.op, HttpSource | GitSource)
    return by_text, by_text if shares_number else f"{scope}|{stage}|#{m.group('index')}"


def instruction_text(v: Vertex) -> str:
    """The instruction as written, variables not substituted (a FROM's resolved digest left out: that change
    is told apart), so that a changed build arg reads as such and not as a changed instruction."""
    if v.instruction:
        return _PINNED.sub("", v.instruction)
    m = _STEP.match(v.name)
    return _PINNED.sub("", m.group("text") if m else v.name)


def _env(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    return dict(e.partition("=")[::2] for e in entries)


def op_detail(v: Vertex) -> dict[str, Any]:
    """The op's fields that a user would recognise, JSON-ready (bytes shown by digest only)."""
    op = v.op
    if isinstance(op, ExecOp):
        return {"args": list(op.args), "env": _env(op.env), "cwd": op.cwd, "user": op.user, "network": op.network,
                "security": op.security, "mounts": [f"{m.type}:{m.target}" for m in op.mounts],
                "build_args": sorted(v.arg_names)}
    if isinstance(op, ImageSource):
        return {"ref": op.ref, "digest": op.manifest_digest, "platform": op.platform}
    if isinstance(op, HttpSource):
        return {"url": op.url, "checksum": op.checksum}
    if isinstance(op, GitSource):
        return {"remote": op.remote, "ref": op.ref}
    if isinstance(op, FileOp):
        return {"actions": [type(a).__name__ for a in op.actions]}
    return {"fields": {k: v for k, v in asdict(op).items() if not isinstance(v, bytes)}}


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _quote(value: str | None) -> str:
    return "(unset)" if value is None else repr(value)


def _env_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old_env: dict[str, str] = old.get("env") or {}
    new_env: dict[str, str] = new.get("env") or {}
    args = set(old.get("build_args") or []) | set(new.get("build_args") or [])
    out = []
    for key in sorted(set(old_env) | set(new_env)):
        if old_env.get(key) != new_env.get(key):
            what = "build arg" if key in args else "env"
            out.append(f"{what} {key} changed: {_quote(old_env.get(key))} → {_quote(new_env.get(key))}")
    return out


def _file_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        name = quote_name(path)  # names are bytes: not all are UTF-8 or printable
        if a is None:
            out.append(f"{name} added")
        elif b is None:
            out.append(f"{name} removed")
        else:
            out.append(f"{name} changed ({a[:12]} → {b[:12]})")
    return out


BREAKPOINT_RERUN = "ran again to stop at a breakpoint"
"""The reason of a step whose result is cached but runs anyway: the debugger stops at it, or at a step after it."""


def ignored_by(v: Vertex, no_cache: bool) -> str:
    """The flag by which `v` ignores the cache in a build with(out) `--no-cache`: "--no-cache", or
    "--no-cache-filter" (the frontend marks the steps of the stages it names); "" when it does not."""
    if not ignores_cache(v, no_cache):
        return ""
    return "--no-cache" if no_cache else "--no-cache-filter"


def rerun_below(below: Vertex, no_cache: bool) -> str:
    """The reason of a step whose result is cached but runs anyway because `below`, under it, ignores the cache
    (as in BuildKit, what depends on a step that ignores the cache runs again)."""
    return f"parent step ran again ({ignored_by(below, no_cache)}): {below.name}"


def explain(old: dict[str, Any] | None, new: dict[str, Any], old_key: str, new_key: str,
            missed_inputs: dict[str, str], ignored: str, forced: str = "") -> str:
    """The miss reason for a step whose new key parts are `new` and last record `old` (None: never built).

    `missed_inputs` maps the keys of inputs that missed in this build to their names; `ignored` is the flag by
    which the step ignores the cache (`ignored_by`), if any; `forced` says why a step whose result is in the
    cache runs anyway (BREAKPOINT_RERUN).
    """
    if ignored == "--no-cache":
        return "cache disabled (--no-cache)"
    if ignored:
        return f"cache disabled for its stage ({ignored})"
    if forced:
        return forced
    if old is None:
        return "never built before"
    if old_key == new_key:
        return "its cache record is gone (pruned or lost)"
    reasons: list[str] = []
    if old.get("text") != new.get("text"):
        reasons.append(f"instruction changed: {old.get('text')} → {new.get('text')}")
    od, nd = old.get("detail") or {}, new.get("detail") or {}
    if "digest" in nd and od.get("digest") != nd.get("digest"):
        reasons.append(f"base image {nd.get('ref')} changed: {_short(str(od.get('digest', '')))} → "
                       f"{_short(str(nd['digest']))}")
    if "env" in nd:
        reasons += _env_changes(od, nd)
        for field, label in (("args", "command"), ("cwd", "workdir"), ("user", "user"), ("network", "network"),
                             ("security", "security"), ("mounts", "mounts")):
            if od.get(field) != nd.get(field) and not reasons:
                reasons.append(f"{label} changed")
    if old.get("remote") != new.get("remote") and new.get("remote"):
        reasons.append(f"remote content changed: {new.get('remote')}")
    reasons += _file_changes(old.get("files") or {}, new.get("files") or {})
    if old.get("mounts_key") != new.get("mounts_key") and new.get("mounts_key"):
        reasons.append("files of a bind-mounted context path changed")
    if old.get("devices") != new.get("devices") and (old.get("devices") or new.get("devices")):
        reasons.append(f"CDI devices changed: {old.get('devices') or []} → {new.get('devices') or []}")
    if not reasons:
        old_inputs = [i.get("key") for i in old.get("inputs") or []]
        for i, item in enumerate(new.get("inputs") or []):
            key = item.get("key")
            if i < len(old_inputs) and old_inputs[i] == key:
                continue
            if key in missed_inputs:
                reasons.append(f"parent step missed: {missed_inputs[key]}")
            else:
                reasons.append(f"input changed: {item.get('name')}")
    return "; ".join(reasons) if reasons else "no cache record for this key"
