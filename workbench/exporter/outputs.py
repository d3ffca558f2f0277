"""Every `--output` exporter (image, oci, docker, tar, local), `-t` / `--push`, and `--metadata-file`.

type=image stores the image in the local image store under each name (comma-separated) and, with push=true,
pushes it to each name's registry. type=oci / type=docker write archives (a docker archive is also an OCI
layout), type=tar the final filesystem as one tar, type=local as files. `compression=gzip|zstd|uncompressed`
picks the layer compression of image outputs. The metadata is buildctl's: containerimage.digest,
containerimage.config.digest, containerimage.descriptor and image.name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.exporter.destination import DestinationError
from workbench.image.content import CorruptBlob
from workbench.progress.events import EventBus, VertexCompleted, VertexFailed, VertexStarted, VertexStatus

if TYPE_CHECKING:
    from workbench.build import BuildResult, OutputSpec
    from workbench.image.content import ContentStore
    from workbench.image.reference import Reference

_TRUE = ("1", "true", "yes", "on")
_NAMES = {"image": "exporting to image", "oci": "exporting to oci image format",
          "docker": "exporting to docker image format", "tar": "exporting to client tarball",
          "local": "exporting to client directory"}


class ExportError(Exception):
    """An export failed; the message says which output and why."""


def tag_output(outputs: list[OutputSpec], tags: list[str], push: bool) -> list[OutputSpec]:
    """`-t REF` (repeatable) and `--push`: merged into the type=image output (made if there is none)."""
    from workbench.build import OutputSpec, OutputSpecError, parse_output

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


def local_image(ref: Reference, content: ContentStore, platform: str) -> tuple[str, dict[str, Any]] | None:
    """(manifest digest, config) of the image the local store names `ref` for `platform`, if it has one."""
    from workbench.image.store import ImageStore, ImageStoreError

    if ref.digest is not None or not (content.root.parent / "images.json").exists():
        return None
    images = ImageStore.for_content(content)
    try:
        found = images.get(str(ref))
        if found is None:
            return None
        digest = images.manifest_for(found.digest, platform)
        if digest is None:
            return None
        manifest = json.loads(content.read(digest))
        config = json.loads(content.read(manifest["config"]["digest"]))
        for layer in manifest.get("layers") or []:
            if not content.has(layer["digest"]):
                if (corrupt := content.corrupt(layer["digest"])) is not None:
                    raise corrupt
                return None  # pruned: a pull fetches it again
    except CorruptBlob as e:  # found now or by an earlier read: a build on must not quietly use another image
        raise e.for_image(str(ref)) from None
    except (ImageStoreError, OSError, ValueError, KeyError):
        return None
    return digest, config


def export_output(out: OutputSpec, chain: list[str], image: dict[str, Any], solver: Any, bus: EventBus,
                  manifest: str | None, metadata: dict[str, Any] | None = None) -> str | None:
    """Write the output `out`; returns the manifest digest (made here if `manifest` is None and needed)."""
    name = _NAMES[out.type]
    vid = f"internal:{name}:{id(out)}"
    t0 = time.time()
    bus.emit(VertexStarted(vid, name, ts=t0))
    try:
        manifest = _export(out, chain, image, solver, bus, manifest, metadata, vid, name)
    except ExportError as e:
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise
    except (DestinationError, CorruptBlob) as e:
        if isinstance(e, CorruptBlob) and not e.image:
            e.for_image(_owner(e.digest, solver.content, out))
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise ExportError(str(e)) from None
    except OSError as e:
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise ExportError(f"export failed: {e}") from None
    bus.emit(VertexCompleted(vid, name, duration=time.time() - t0))
    return manifest


def _export(out: OutputSpec, chain: list[str], image: dict[str, Any], solver: Any, bus: EventBus,
            manifest: str | None, metadata: dict[str, Any] | None, vid: str, vname: str) -> str | None:
    from workbench.exporter.image import LAYER_TYPES, build_image

    if out.type == "local":
        from workbench.exporter.local import export_local

        export_local(chain, solver.snapshots, Path(out.dest))
        return manifest
    if out.type == "tar":
        from workbench.image.archive import write_tar_rootfs

        dest = Path(out.dest)
        if not chain:
            import tarfile

            from workbench.exporter.destination import atomic_file

            with atomic_file(dest, "--output type=tar") as f, tarfile.open(fileobj=f, mode="w"):
                pass
            return manifest
        with solver.snapshots.mount_readonly(chain) as root:
            write_tar_rootfs(dest, Path(root))
        return manifest

    compression = out.attrs.get("compression", "gzip")
    if compression not in LAYER_TYPES:
        raise ExportError(f"--output type={out.type}: unknown compression {compression!r} "
                          f"(gzip, zstd, uncompressed)")
    if manifest is None or compression != "gzip":
        bus.emit(VertexStatus(vid, vname, status_id="exporting layers"))
        manifest = build_image(chain, image, solver.store, solver.snapshots, solver.content, compression)
        bus.emit(VertexStatus(vid, vname, status_id="exporting layers", done=True))
    content = solver.content
    names = [n.strip() for n in out.attrs.get("name", "").split(",") if n.strip()]
    if out.type == "oci":
        from workbench.image.oci_layout import write_oci_archive

        write_oci_archive(Path(out.dest), content, manifest, names[0] if names else None)
    elif out.type == "docker":
        from workbench.image.archive import ArchiveError, write_docker_archive

        try:
            write_docker_archive(Path(out.dest), content, [(manifest, names)])
        except ArchiveError as e:
            raise ExportError(f"--output type=docker: {e}") from None
    else:
        _store_and_push(out, names, manifest, content, bus, vid, vname)
    if metadata is not None:
        raw = content.read(manifest)
        doc = json.loads(raw)
        metadata["containerimage.config.digest"] = doc["config"]["digest"]
        metadata["containerimage.descriptor"] = {"mediaType": doc.get("mediaType"), "digest": manifest,
                                                 "size": len(raw)}
        metadata["containerimage.digest"] = manifest
        if names:
            from workbench.image.reference import parse_reference

            known = [n for n in str(metadata.get("image.name", "")).split(",") if n]  # several outputs: all names
            known += [str(parse_reference(n)) for n in names if str(parse_reference(n)) not in known]
            metadata["image.name"] = ",".join(known)
    return manifest


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
    from workbench.image.reference import parse_reference
    from workbench.image.registry import RegistryError, push_image
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
    from workbench.build import BuildFailure
    from workbench.exporter.destination import atomic_file

    try:
        with atomic_file(path, "--metadata-file") as f:
            f.write((json.dumps(result.metadata, indent=2, sort_keys=True) + "\n").encode())
    except DestinationError as e:
        raise BuildFailure(str(e)) from None
    except OSError as e:
        raise BuildFailure(f"--metadata-file {path}: {e.strerror}") from None
