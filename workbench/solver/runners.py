"""How each op kind produces its snapshot: pull + extract, exec in runc, file actions."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, BinaryIO

from workbench.llb.ops import Copy, ExecOp, FileOp, ImageSource, LocalSource, Mkdir, Mkfile, Rm, Vertex
from workbench.progress.events import EventBus, VertexLog, VertexStatus
from workbench.solver import fileops
from workbench.solver.types import SolveError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from workbench.solver.job import SolveJob
    from workbench.solver.types import Result
    from workbench.worker import Worker


def pull_image(worker: Worker, bus: EventBus, v: Vertex, op: ImageSource) -> list[str]:
    """Fetch the image's blobs (skipping those present) and extract each layer once, shared by chain id; a
    missing layer is extracted while it downloads."""
    from workbench.image.content import CorruptBlob
    from workbench.image.pull import pull
    from workbench.image.reference import parse_reference
    from workbench.image.registry_errors import RegistryError
    from workbench.snapshot.layers import LayerContentError
    from workbench.worker import DEFAULT_LAYER_TYPE, LayerRef

    ref = named = parse_reference(op.ref)
    if op.manifest_digest:
        ref = type(ref)(ref.registry, ref.repository, ref.tag, op.manifest_digest)

    def progress(what: str, current: int, total: int) -> None:
        bus.emit(VertexStatus(v.digest, v.name, status_id=what, current=current, total=total,
                              done=current >= total > 0))

    stop = threading.Event()  # set by ensure_layer_chain when a layer fails: the other downloads stop too

    def open_blob(layer: LayerRef) -> AbstractContextManager[BinaryIO]:
        return image.open_layer(worker.content, layer.digest, progress, stop)  # verified as it is read

    def on_extract(layer: LayerRef, done: bool) -> None:
        bus.emit(VertexStatus(v.digest, v.name, status_id=f"extracting {layer.digest[:19]}", done=done))

    try:
        image = pull(ref, worker.content, op.platform, progress=progress, layers=False)  # streamed as extracted
    except RegistryError as e:
        raise SolveError(str(e), v) from None
    except CorruptBlob as e:
        raise SolveError(str(e.for_image(str(named))), v) from None
    diff_ids: list[str] = image.config.get("rootfs", {}).get("diff_ids", [])
    layers = [LayerRef(diff_id, layer["digest"], int(layer["size"]), layer.get("mediaType", DEFAULT_LAYER_TYPE))
              for layer, diff_id in zip(image.layers, diff_ids, strict=True)]
    try:
        return worker.ensure_layer_chain(layers, open_blob, on_extract, stop)
    except (RegistryError, LayerContentError) as e:
        raise SolveError(f"{named}: {e}" if isinstance(e, LayerContentError) else str(e), v) from None
    except CorruptBlob as e:
        raise SolveError(str(e.for_image(str(named))), v) from None


def describe_process(op: ExecOp) -> str:
    return " ".join(op.args)


def run_exec(worker: Worker, job: SolveJob, v: Vertex, op: ExecOp, inputs: list[Result]) -> list[str]:
    """Run the process on input 0 with its mounts; only what it writes to the rootfs becomes the layer."""
    from contextlib import ExitStack

    from workbench.executor.runc import ExecError
    from workbench.solver.step import Step, exec_spec

    def on_output(stream: int, data: bytes) -> None:
        job.bus.emit(VertexLog(v.digest, v.name, stream=stream, data=data))

    chain = inputs[0].chain if inputs else []
    with worker.snapshots.prepare() as prepared, ExitStack() as stack:
        spec = exec_spec(worker, job, v, inputs, stack)
        with worker.snapshots.mount_writable(chain, prepared) as rootfs:
            try:
                result = worker.run(rootfs, spec, on_output=on_output, cancel=job.cancel)
            except ExecError as e:
                raise SolveError(str(e), v) from None
            if result.exit_code != 0 and job.hooks is not None and not job.cancel.is_set():
                # break on error: the shell sees the files the failed command left, before they are discarded
                step = Step(worker, job, v, inputs, _failure_message(op, result.exit_code), rootfs, spec)
                try:
                    job.hooks.on_failure(step)
                finally:
                    step.release()
        stack.close()
        if job.cancel.is_set() and result.exit_code != 0:
            raise SolveError("canceled", v)
        if result.exit_code != 0:
            raise SolveError(_failure_message(op, result.exit_code), v)
        snapshot = worker.snapshots.commit(prepared)
    return chain + [snapshot]


def _creates_new_top_level_path(worker: Worker, chain: list[str], op: FileOp) -> bool:
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
    return not any(os.path.lexists(lower / parts[0]) for lower in worker.snapshots.lowers(chain))


def _failure_message(op: ExecOp, exit_code: int) -> str:
    return f'process "{describe_process(op)}" did not complete successfully: exit code: {exit_code}'


def run_file(worker: Worker, job: SolveJob, v: Vertex, op: FileOp, inputs: list[Result]) -> list[str]:
    """Apply the actions on input 0 through an overlay mount; reads from other inputs use read-only views."""
    from contextlib import ExitStack

    chain = inputs[0].chain if inputs and not isinstance(v.inputs[0].op, LocalSource) else []
    with worker.snapshots.prepare() as prepared, ExitStack() as stack:
        if _creates_new_top_level_path(worker, chain, op):
            dest = prepared / "fs"  # what it writes is new in every layer: the upper dir itself is the view
        else:
            dest = stack.enter_context(worker.snapshots.mount_writable(chain, prepared))
        views: dict[int, tuple[object, bool, fileops.Excluded | None]] = {}
        for action in op.actions:
            try:
                if isinstance(action, Copy):
                    idx = action.src_input
                    if idx not in views:
                        src_v = v.inputs[idx]
                        if isinstance(src_v.op, LocalSource):
                            ctx = job.context(src_v)
                            views[idx] = (ctx.path, True, ctx.excluded)
                        else:
                            path = stack.enter_context(worker.snapshots.mount_readonly(inputs[idx].chain))
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
                raise SolveError(str(e), v) from None
        stack.close()
        snapshot = worker.snapshots.commit(prepared)
    return chain + [snapshot]
