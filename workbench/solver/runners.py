"""How each op kind produces its snapshot: pull + extract, exec in runc, file actions."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, BinaryIO, cast

from workbench.cache.store import LayerBlob
from workbench.llb.ops import Copy, ExecOp, FileOp, ImageSource, LocalSource, Mkdir, Mkfile, Rm, Vertex
from workbench.progress.events import VertexLog, VertexStatus
from workbench.solver import fileops

if TYPE_CHECKING:
    from workbench.solver.solver import Result, Solver


def _error(message: str, v: Vertex) -> Exception:
    from workbench.solver.solver import SolveError

    return SolveError(message, v)


def pull_image(solver: Solver, v: Vertex, op: ImageSource) -> list[str]:
    """Fetch the image's blobs (skipping those present) and extract each layer once, shared by chain id."""
    from workbench.image.content import CorruptBlob
    from workbench.image.reference import parse_reference
    from workbench.image.registry import RegistryError, pull
    from workbench.snapshot.layers import extract_layer

    ref = named = parse_reference(op.ref)
    if op.manifest_digest:
        ref = type(ref)(ref.registry, ref.repository, ref.tag, op.manifest_digest)

    def progress(what: str, current: int, total: int) -> None:
        solver.bus.emit(VertexStatus(v.digest, v.name, status_id=what, current=current, total=total,
                                     done=current >= total > 0))

    try:
        image = pull(ref, solver.content, op.platform, progress=progress)
    except RegistryError as e:
        raise _error(str(e), v) from None
    except CorruptBlob as e:
        raise _error(str(e.for_image(str(named))), v) from None
    diff_ids: list[str] = image.config.get("rootfs", {}).get("diff_ids", [])
    chain: list[str] = []
    chain_id = ""
    for layer, diff_id in zip(image.layers, diff_ids, strict=True):
        chain_id = diff_id if not chain_id else "sha256:" + hashlib.sha256(f"{chain_id} {diff_id}".encode()).hexdigest()
        key = "layer:" + chain_id
        existing = solver.store.lookup(key)
        if existing is not None and all(solver.snapshots.exists(s) for s in existing):
            chain = existing
            continue
        solver.bus.emit(VertexStatus(v.digest, v.name, status_id=f"extracting {layer['digest'][:19]}"))
        with solver.snapshots.prepare() as prepared:
            try:
                with solver.content.open(layer["digest"]) as f:  # verified as it is read
                    extract_layer(cast(BinaryIO, f), prepared / "fs",
                                  layer.get("mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"))
            except CorruptBlob as e:
                raise _error(str(e.for_image(str(named))), v) from None
            snapshot = solver.snapshots.commit(prepared)
        solver.store.record_layer_blob(
            snapshot, LayerBlob(diff_id, layer["digest"], int(layer["size"]), layer["mediaType"])
        )
        chain = solver.store.record(key, chain + [snapshot], f"layer {diff_id}")
        solver.bus.emit(VertexStatus(v.digest, v.name, status_id=f"extracting {layer['digest'][:19]}", done=True))
    return chain


def describe_process(op: ExecOp) -> str:
    return " ".join(op.args)


def run_exec(solver: Solver, v: Vertex, op: ExecOp, inputs: list[Result]) -> list[str]:
    """Run the process on input 0 with its mounts; only what it writes to the rootfs becomes the layer."""
    from contextlib import ExitStack

    from workbench.executor.runc import ExecError, run
    from workbench.executor.spec import ExecSpec
    from workbench.solver import mounts

    def on_output(stream: int, data: bytes) -> None:
        solver.bus.emit(VertexLog(v.digest, v.name, stream=stream, data=data))

    chain = inputs[0].chain if inputs else []
    with solver.snapshots.prepare() as prepared, ExitStack() as stack:
        extra = mounts.prepare(solver, v, inputs, stack)
        spec = ExecSpec(args=list(op.args), env=merge_env(list(op.env), extra.env), cwd=op.cwd or "/",
                        user=op.user, network=op.network, mounts=extra.mounts, security=op.security)
        if op.devices and solver.devices is not None and (inject := solver.devices.spec_edit(v)) is not None:
            spec.spec_edits.append(inject)  # the step's CDI devices (workbench.cdi)
        with solver.snapshots.mount_writable(chain, prepared) as rootfs:
            try:
                result = run(rootfs, spec, solver.snapshots.tmp, on_output=on_output, cancel=solver.cancel)
            except ExecError as e:
                raise _error(str(e), v) from None
            if result.exit_code != 0 and solver.debugger is not None and not solver.cancel.is_set():
                # break on error: the shell sees the files the failed command left, before they are discarded
                solver.debugger.after_failure(solver, v, inputs, _failure_message(op, result.exit_code), rootfs, spec)
        stack.close()
        if solver.cancel.is_set() and result.exit_code != 0:
            raise _error("canceled", v)
        if result.exit_code != 0:
            raise _error(_failure_message(op, result.exit_code), v)
        snapshot = solver.snapshots.commit(prepared)
    return chain + [snapshot]


def _creates_new_top_level_path(solver: Solver, chain: list[str], op: FileOp) -> bool:
    """Whether `op` is one COPY/ADD to a top-level path (`/app`) that no layer below has (not even as a
    whiteout), with a numeric or no --chown. Then every path it creates is new, and writing straight into the
    new snapshot's upper dir gives what writing through the overlay would, several times faster (creating
    files through overlayfs costs ~3x a plain create: a 20,000-file context is mostly creates)."""
    import os
    import posixpath

    if len(op.actions) != 1 or not isinstance(op.actions[0], Copy):
        return False
    action = op.actions[0]
    parts = [p for p in posixpath.normpath("/" + action.dest).split("/") if p]
    if len(parts) != 1 or parts[0] in (".", ".."):
        return False
    if action.owner and not all(x.isdigit() for x in action.owner.split(":")):
        return False  # a user name is looked up in the image's /etc/passwd: needs the merged view
    return not any(os.path.lexists(lower / parts[0]) for lower in solver.snapshots.lowers(chain))


def _failure_message(op: ExecOp, exit_code: int) -> str:
    return f'process "{describe_process(op)}" did not complete successfully: exit code: {exit_code}'


def merge_env(env: list[str], extra: list[str]) -> list[str]:
    """`env` with `extra` entries (secret env vars, SSH_AUTH_SOCK) added, replacing same-named ones."""
    names = {e.split("=", 1)[0] for e in extra}
    return [e for e in env if e.split("=", 1)[0] not in names] + extra


def run_file(solver: Solver, v: Vertex, op: FileOp, inputs: list[Result]) -> list[str]:
    """Apply the actions on input 0 through an overlay mount; reads from other inputs use read-only views."""
    from contextlib import ExitStack

    chain = inputs[0].chain if inputs and not isinstance(v.inputs[0].op, LocalSource) else []
    with solver.snapshots.prepare() as prepared, ExitStack() as stack:
        if _creates_new_top_level_path(solver, chain, op):
            dest = prepared / "fs"  # what it writes is new in every layer: the upper dir itself is the view
        else:
            dest = stack.enter_context(solver.snapshots.mount_writable(chain, prepared))
        views: dict[int, tuple[object, bool, fileops.Excluded | None]] = {}
        for action in op.actions:
            try:
                if isinstance(action, Copy):
                    idx = action.src_input
                    if idx not in views:
                        src_v = v.inputs[idx]
                        if isinstance(src_v.op, LocalSource):
                            ctx = solver._context(src_v)
                            views[idx] = (ctx.path, True, ctx.excluded)
                        else:
                            path = stack.enter_context(solver.snapshots.mount_readonly(inputs[idx].chain))
                            views[idx] = (path, False, None)
                    src_root, is_local, excluded = views[idx]
                    fileops.copy(src_root, dest, action, excluded=excluded, reset_owner=is_local)  # type: ignore[arg-type]
                elif isinstance(action, Mkdir):
                    fileops.mkdir(dest, action)
                elif isinstance(action, Mkfile):
                    fileops.mkfile(dest, action)
                elif isinstance(action, Rm):
                    fileops.rm(dest, action)
            except fileops.FileActionError as e:
                raise _error(str(e), v) from None
        stack.close()
        snapshot = solver.snapshots.commit(prepared)
    return chain + [snapshot]
