"""Every `--output` exporter (image, oci, docker, tar, local), `-t` / `--push`, and `--metadata-file`.

type=image stores the image in the local image store under each name (comma-separated) and, with push=true,
pushes it to each name's registry. type=oci / type=docker write archives (a docker archive is also an OCI
layout), type=tar the final filesystem as one tar, type=local as files. `compression=gzip|zstd|uncompressed`
picks the layer compression of image outputs, `compression-level=N` its level (gzip 0-9, default 6; zstd 1-22,
default 3: BuildKit's) and `force-compression=true` recompresses remembered and base layers of another one.
The metadata is buildctl's: containerimage.digest, containerimage.config.digest, containerimage.descriptor and
image.name.

A new output type is a writer registered with `@exporter(TYPE, vertex name)` below (and its name in
workbench.request.OUTPUT_TYPES, which `--output` accepts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.fsutil.destination import DestinationError
from workbench.image.content import CorruptBlob
from workbench.progress.events import EventBus, VertexCompleted, VertexFailed, VertexStarted, VertexStatus

if TYPE_CHECKING:
    from workbench.exporter.prefetch import LayerPrefetch
    from workbench.image.assemble import Compression, Uploads
    from workbench.image.content import ContentStore
    from workbench.request import BuildResult, OutputSpec
    from workbench.worker import Worker

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ExportError(Exception):
    """An export failed; the message says which output and why."""


def tag_output(outputs: list[OutputSpec], tags: list[str], push: bool) -> list[OutputSpec]:
    """`-t REF` (repeatable) and `--push`: merged into the type=image output (made if there is none)."""
    from workbench.request import OutputSpec, OutputSpecError, parse_output

    for t in tags:
        parse_output(f'type=image,"name={t}"')  # validates the name (OutputSpecError)
    out = list(outputs)
    for i, o in enumerate(out):
        if o.type == "image":
            names = [n for n in o.attrs["name"].split(",") if n] + [t for t in tags if t not in o.attrs["name"]]
            attrs = {**o.attrs, "name": ",".join(names)}
            if push:
                attrs["push"] = "true"
            out[i] = OutputSpec("image", attrs)
            return out
    if not tags:
        raise OutputSpecError("--push needs an image name: give -t REF or --output type=image,name=REF")
    attrs = {"name": ",".join(tags)}
    if push:
        attrs["push"] = "true"
    return out + [OutputSpec("image", attrs)]


@dataclass
class Export:
    """One output being written: what an exporter is handed."""

    out: OutputSpec
    chain: list[str]
    """The final filesystem's snapshot chain."""
    image: dict[str, Any]
    """The image config."""
    worker: Worker
    """Where the build's snapshots and blobs are: `.store`, `.snapshots`, `.content`."""
    bus: EventBus
    vid: str
    name: str
    """The export's vertex, to report status on."""
    manifest: str | None = None
    """The image's manifest digest, for exporters that write an image (made before they are called)."""
    prefetch: LayerPrefetch | None = None
    """The build's layers compressed while it ran, if any."""

    @property
    def names(self) -> list[str]:
        return [n.strip() for n in self.out.attrs.get("name", "").split(",") if n.strip()]

    def status(self, status_id: str, **kw: Any) -> None:
        self.bus.emit(VertexStatus(self.vid, self.name, status_id=status_id, **kw))


Writer = Callable[["Export"], None]


@dataclass(frozen=True)
class Exporter:
    """How one output type is written: its vertex name, whether it writes an image, and the writer."""

    title: str
    write: Writer
    image: bool = False
    """An image output: layers, config and manifest are made first, and the metadata names them."""


EXPORTERS: dict[str, Exporter] = {}
"""Every `--output type=` there is, by type."""


def exporter(kind: str, title: str, image: bool = False) -> Callable[[Writer], Writer]:
    """Register the decorated function as the writer of `--output type=KIND`."""
    def register(write: Writer) -> Writer:
        EXPORTERS[kind] = Exporter(title, write, image)
        return write
    return register


def export_output(out: OutputSpec, chain: list[str], image: dict[str, Any], worker: Worker, bus: EventBus,
                  manifest: str | None, metadata: dict[str, Any] | None = None,
                  prefetch: LayerPrefetch | None = None) -> str | None:
    """Write the output `out`; returns the manifest digest (made here if `manifest` is None and needed).
    The layers `prefetch` compressed (or is compressing) while the build ran are taken from it."""
    entry = EXPORTERS[out.type]
    name = entry.title
    vid = f"internal:{name}:{id(out)}"
    t0 = time.time()
    bus.emit(VertexStarted(vid, name, ts=t0))
    job = Export(out, chain, image, worker, bus, vid, name, manifest, prefetch)
    try:
        if entry.image:
            job.manifest = _image_manifest(job)
        entry.write(job)
        if entry.image and metadata is not None:
            _record_metadata(job, metadata)
    except ExportError as e:
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise
    except (DestinationError, CorruptBlob) as e:
        if isinstance(e, CorruptBlob) and not e.image:
            e.for_image(_owner(e.digest, worker.content, out))
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise ExportError(str(e)) from None
    except OSError as e:
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise ExportError(f"export failed: {e}") from None
    bus.emit(VertexCompleted(vid, name, duration=time.time() - t0))
    return job.manifest


def release_replaced(outputs: list[OutputSpec]) -> None:
    """At the start of a build: each archive an output will replace (type=oci|docker|tar, dest=FILE) gives its
    cached pages back now (`release_cached_pages`), for the build's own files."""
    from workbench.fsutil.destination import release_cached_pages

    for out in outputs:
        if out.type in ("oci", "docker", "tar") and out.dest:
            release_cached_pages(Path(out.dest))


def _image_manifest(job: Export) -> str:
    """The image's layers, config and manifest in the content store (made once for gzip, shared by outputs)."""
    from workbench.image.assemble import Compression, build_image

    comp = compression_of(job.out)
    if job.manifest is not None and comp == Compression():
        return job.manifest
    job.status("exporting layers")
    w = job.worker
    pending = job.prefetch.hand_over(comp) if job.prefetch is not None else None
    manifest = build_image(job.chain, job.image, w.store, w.snapshots, w.content, comp, _streamed_push(job),
                           pending)
    job.status("exporting layers", done=True)
    return manifest


def is_push(out: OutputSpec) -> bool:
    """Whether `out` pushes its image (`type=image,push=true`)."""
    return out.type == "image" and out.attrs.get("push", "").lower() in _TRUE


def _streamed_push(job: Export) -> Uploads | None:
    """For `type=image,push=true`: new layers go to the first name's registry while they are compressed (the
    push then finds them there); None where that cannot start, the push saying why if it matters."""
    if not is_push(job.out) or not job.names:
        return None
    from workbench.image.reference import parse_reference
    from workbench.image.registry_client import push_client
    from workbench.image.registry_errors import RegistryError
    from workbench.image.upload import StreamingUpload

    try:
        ref = parse_reference(job.names[0])
        client = push_client(ref)
        with client.request("HEAD", "/blobs/sha256:" + "0" * 64, f"authenticating to push {ref}",
                            not_found_ok=True):
            pass  # earns the token before any body is streamed
    except (RegistryError, ValueError, OSError):
        return None
    status = f"pushing {ref}"

    def progress(label: str, current: int, total: int) -> None:
        job.bus.emit(VertexStatus(job.vid, job.name, status_id=f"{status} {label}", current=current, total=total,
                                  done=current >= total > 0))

    return lambda snapshot: StreamingUpload(client, f"layer {snapshot[:12]}", progress)


def compression_of(out: OutputSpec) -> Compression:
    """buildx's `compression=`, `compression-level=` and `force-compression=` of an image output."""
    from workbench.fsutil.compress import LEVELS
    from workbench.image.assemble import LAYER_TYPES, Compression

    kind = out.attrs.get("compression", "gzip")
    if kind not in LAYER_TYPES:
        raise ExportError(f"--output type={out.type}: unknown compression {kind!r} (gzip, zstd, uncompressed)")
    level: int | None = None
    allowed = LEVELS.get(kind)
    if "compression-level" in out.attrs and allowed is not None:  # ignored when uncompressed, as BuildKit does
        text = out.attrs["compression-level"]
        try:
            level = int(text)
        except ValueError:
            level = None
        if level is None or level not in allowed:
            raise ExportError(f"--output type={out.type}: compression-level={text!r} is not a {kind} level "
                              f"({allowed.start}-{allowed.stop - 1})")
    force = out.attrs.get("force-compression", "false").lower()
    if force not in _TRUE + _FALSE:
        raise ExportError(f"--output type={out.type}: force-compression={force!r} is not true or false")
    return Compression(kind, level, force in _TRUE)


def _record_metadata(job: Export, metadata: dict[str, Any]) -> None:
    """buildctl's metadata of an image output: digests, descriptor and (across outputs) every name."""
    assert job.manifest is not None
    raw = job.worker.content.read(job.manifest)
    doc = json.loads(raw)
    metadata["containerimage.config.digest"] = doc["config"]["digest"]
    metadata["containerimage.descriptor"] = {"mediaType": doc.get("mediaType"), "digest": job.manifest,
                                             "size": len(raw)}
    metadata["containerimage.digest"] = job.manifest
    if job.names:
        from workbench.image.reference import parse_reference

        known = [n for n in str(metadata.get("image.name", "")).split(",") if n]  # several outputs: all names
        known += [str(parse_reference(n)) for n in job.names if str(parse_reference(n)) not in known]
        metadata["image.name"] = ",".join(known)


@exporter("local", "exporting to client directory")
def _local(job: Export) -> None:
    from workbench.exporter.local import export_local

    export_local(job.chain, job.worker.snapshots, Path(job.out.dest))


@exporter("tar", "exporting to client tarball")
def _tar(job: Export) -> None:
    from workbench.image.archive import write_tar_rootfs

    dest = Path(job.out.dest)
    if not job.chain:
        import tarfile

        from workbench.fsutil.destination import atomic_file

        with atomic_file(dest, "--output type=tar") as f, tarfile.open(fileobj=f, mode="w"):
            pass
        return
    with job.worker.snapshots.mount_readonly(job.chain) as root:
        write_tar_rootfs(dest, Path(root))


@exporter("oci", "exporting to oci image format", image=True)
def _oci(job: Export) -> None:
    from workbench.image.oci_layout import write_oci_archive

    assert job.manifest is not None
    write_oci_archive(Path(job.out.dest), job.worker.content, job.manifest, job.names[0] if job.names else None)


@exporter("docker", "exporting to docker image format", image=True)
def _docker(job: Export) -> None:
    from workbench.image.archive import ArchiveError, write_docker_archive

    assert job.manifest is not None
    try:
        write_docker_archive(Path(job.out.dest), job.worker.content, [(job.manifest, job.names)])
    except ArchiveError as e:
        raise ExportError(f"--output type=docker: {e}") from None


@exporter("image", "exporting to image", image=True)
def _image(job: Export) -> None:
    assert job.manifest is not None
    _store_and_push(job.out, job.names, job.manifest, job.worker.content, job.bus, job.vid, job.name)


def _owner(blob: str, content: ContentStore, out: OutputSpec) -> str:
    """The image to name in an error about `blob`: a stored image that has it, else the output's name."""
    from workbench.image.store import ImageStore, ImageStoreError

    try:
        images = ImageStore.for_content(content)
        for image in images.entries():
            if blob in images.blobs(image.digest):
                return image.name
    except (ImageStoreError, OSError, ValueError):
        pass
    names = [n.strip() for n in out.attrs.get("name", "").split(",") if n.strip()]
    return names[0] if names else "the image being exported"


def _store_and_push(out: OutputSpec, names: list[str], manifest: str, content: ContentStore, bus: EventBus,
                    vid: str, vname: str) -> None:
    from workbench.image.push import push_image
    from workbench.image.reference import parse_reference
    from workbench.image.registry_errors import RegistryError
    from workbench.image.store import ImageStore, ImageStoreError

    images = ImageStore.for_content(content)
    bus.emit(VertexStatus(vid, vname, status_id=f"writing image {manifest}", done=True))
    for n in names:
        try:
            stored = images.tag(n, manifest)
        except ImageStoreError as e:
            raise ExportError(f"--output type=image,name={n}: {e}") from None
        bus.emit(VertexStatus(vid, vname, status_id=f"naming to {stored.name}", done=True))
    if out.attrs.get("push", "").lower() not in _TRUE:
        return
    for n in names:
        ref = parse_reference(n)
        status = f"pushing {ref}"

        def progress(digest: str, current: int, total: int, status: str = status) -> None:
            bus.emit(VertexStatus(vid, vname, status_id=f"{status} {digest[:19]}", current=current, total=total,
                                  done=current >= total > 0))

        try:
            push_image(ref, content, manifest, progress)
        except RegistryError as e:
            raise ExportError(f"pushing {ref} failed: {e}") from None
        bus.emit(VertexStatus(vid, vname, status_id=status, done=True))


def write_metadata_file(path: Path, result: BuildResult) -> None:
    """`--metadata-file`: the build's metadata as JSON (buildctl's keys), written as archives are (a symlink
    at `path` is replaced, not followed); BuildFailure if it cannot be written."""
    from workbench.fsutil.destination import atomic_file
    from workbench.request import BuildFailure

    try:
        with atomic_file(path, "--metadata-file") as f:
            f.write((json.dumps(result.metadata, indent=2, sort_keys=True) + "\n").encode())
    except DestinationError as e:
        raise BuildFailure(str(e)) from None
    except OSError as e:
        raise BuildFailure(f"--metadata-file {path}: {e.strerror}") from None
