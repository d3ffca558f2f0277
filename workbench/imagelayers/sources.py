"""Where layers are read from: a finished build's snapshot chain (overlay lower dirs: a whiteout is a 0:0 char
device, an opaque dir has the overlay xattr), an image in the root's image store or its registry, or an OCI /
docker archive (layer tars: `.wh.NAME` and `.wh..wh..opq`). Each gives `analysis.LayerSource`s."""

from __future__ import annotations

import io
import json
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from workbench.fsutil.deflate import ERRORS as DEFLATE_ERRORS
from workbench.fsutil.tar import OPAQUE as OPAQUE_NAME
from workbench.fsutil.tar import WHITEOUT_META_PREFIX, WHITEOUT_PREFIX, is_opaque
from workbench.imagelayers.analysis import (
    DIR,
    FILE,
    LINK,
    OPAQUE,
    OTHER,
    WHITEOUT,
    LayerEntry,
    LayerReport,
    LayerSource,
    analyze,
    kind_of,
)

DEFAULT_PLATFORM = "linux/amd64"


class LayerError(Exception):
    """What cannot be shown; the message is one line."""


@dataclass(frozen=True)
class BuiltStep:
    """A step of a finished build as its events told it: vertex digest, name, Dockerfile line, cache key, and
    the digests of its inputs."""

    id: str
    name: str
    line: int | None
    cache_key: str
    inputs: tuple[str, ...] = ()


# -- entries ----------------------------------------------------------------------------------------------------


def snapshot_entries(fs: Path) -> Iterator[LayerEntry]:
    """The entries of an overlay lower dir, parents first."""
    stack = [("", str(fs))]
    while stack:
        rel, host = stack.pop()
        with os.scandir(host) as it:
            found = sorted(it, key=lambda e: e.name, reverse=True)
        for e in found:
            st = e.stat(follow_symlinks=False)
            path = f"{rel}/{e.name}"
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                yield LayerEntry(path, WHITEOUT)
                continue
            kind = kind_of(st.st_mode)
            yield LayerEntry(path, kind, st.st_size if kind == FILE else 0, stat.S_IMODE(st.st_mode), st.st_uid,
                             st.st_gid)
            if kind == DIR:
                if _opaque(e.path):
                    yield LayerEntry(path, OPAQUE)
                stack.append((path, e.path))


def _opaque(host: str) -> bool:
    return is_opaque(host)


_BROKEN: tuple[type[Exception], ...] = (KeyError, ValueError, IndexError, TypeError, EOFError, tarfile.TarError,
                                         *DEFLATE_ERRORS)
"""What an image whose documents or layer tars are damaged raises while it is read."""

Opener = Callable[[], AbstractContextManager[Any]]
"""Opens a layer blob: a context manager that yields a binary stream (a content store blob, an archive member)."""


def tar_entries(stream: Any) -> Iterator[LayerEntry]:
    """The entries of an image layer tar (plain, gzip or zstd) read from the binary stream `stream`."""
    from workbench.snapshot.layers import layer_tar

    plain = layer_tar(stream)  # decompressed here: tarfile's stream mode reads only a first gzip member
    sizes: dict[str, int] = {}
    with tarfile.open(fileobj=plain, mode="r|") as tar:
        for m in tar:
            path = "/" + posixpath.normpath("/" + m.name).lstrip("/")
            if path == "/":
                continue
            parent, base = posixpath.split(path)
            if base == OPAQUE_NAME:
                yield LayerEntry(parent, OPAQUE)
            elif base.startswith(WHITEOUT_META_PREFIX):
                continue  # other AUFS metadata, not content
            elif base.startswith(WHITEOUT_PREFIX):
                yield LayerEntry(posixpath.join(parent, base[len(WHITEOUT_PREFIX):]), WHITEOUT)
            else:
                size = 0
                if m.isreg():
                    size = sizes[path] = m.size
                elif m.islnk():
                    size = sizes.get("/" + posixpath.normpath("/" + m.linkname).lstrip("/"), 0)
                kind = FILE if m.isreg() or m.islnk() else DIR if m.isdir() else LINK if m.issym() else OTHER
                yield LayerEntry(path, kind, size, m.mode & 0o7777, m.uid, m.gid)


def _blob_entries(open_blob: Opener) -> Iterator[LayerEntry]:
    with open_blob() as f:
        yield from tar_entries(f)


# -- a finished build -------------------------------------------------------------------------------------------


def build_report(root: Path, steps: Sequence[BuiltStep], title: str, digests: bool = False) -> LayerReport:
    """The layers of a finished build's final image, each named by the step that made it (a base image's
    layers by its FROM). `digests`: work out the diff id of layers that have no blob yet (tars each)."""
    from workbench.worker import Worker

    steps = [s for s in steps if s.cache_key]
    if not steps:
        raise LayerError("the build has no finished step to show")
    consumed = {i for s in steps for i in s.inputs}
    target = [s for s in steps if s.id not in consumed][-1:] or steps[-1:]
    worker = Worker(root)
    try:
        chain = worker.store.lookup(target[0].cache_key)
        if chain is None:
            raise LayerError(f"the build's result is no longer in the cache of {root} (pruned?)")
        chains = {s.id: worker.store.lookup(s.cache_key) or [] for s in steps}
        sources = []
        for snapshot in chain:
            if not worker.snapshots.exists(snapshot):
                raise LayerError(f"snapshot {snapshot} is gone from {root} (pruned?)")
            # the step whose result ends with this layer; a base image's lower layers: its FROM
            makers = [s for s in steps if snapshot in chains[s.id]]
            maker = min(makers, key=lambda s: (chains[s.id][-1] != snapshot, len(chains[s.id])), default=None)
            fs = worker.snapshots.path(snapshot)
            blob = worker.store.layer_blob(snapshot)
            digest = blob.diff_id if blob is not None else _diff_id(fs) if digests else None
            sources.append(LayerSource(maker.name if maker else f"snapshot {snapshot}",
                                       partial(snapshot_entries, fs), maker.line if maker else None, digest))
        return analyze(title, sources)
    finally:
        worker.close()


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return len(b)


def _diff_id(fs: Path) -> str:
    from workbench.snapshot.layers import write_layer

    return write_layer(fs, _Discard(), "none")[0]  # type: ignore[arg-type]


# -- an image ---------------------------------------------------------------------------------------------------


def image_report(root: Path, image: str, platform: str = DEFAULT_PLATFORM) -> LayerReport:
    """The layers of `image`: an OCI or docker archive file, else a name (or digest) in the root's image store,
    else a reference pulled from its registry into the root's content store (as a FROM would)."""
    if Path(image).is_file():
        return _archive_report(Path(image), platform)
    from workbench.image.content import ContentStore, CorruptBlob
    from workbench.image.pull import pull
    from workbench.image.reference import InvalidReference, parse_reference
    from workbench.image.registry_errors import RegistryError
    from workbench.image.store import ImageStore, ImageStoreError
    from workbench.state_root import prepare_root

    try:
        ref = parse_reference(image)
    except InvalidReference:
        raise LayerError(f"{image}: not a build context, an image archive or an image name") from None
    prepare_root(root)
    content = ContentStore(root / "content")
    images = ImageStore(root)
    try:
        stored = images.resolve(image)
    except ImageStoreError:
        stored = None
    if stored is not None:
        digest = images.manifest_for(stored.digest, platform)
        if digest is None:
            raise LayerError(f"{image}: the stored image has no {platform} manifest")
        name = stored.name
    else:
        try:
            digest = pull(ref, content, platform).manifest_digest
        except RegistryError as e:
            raise LayerError(f"{image}: not in the image store of {root}, and the registry says: {e}") from None
        except OSError as e:
            raise LayerError(f"{image}: not in the image store of {root}, and pulling it failed: {e}") from None
        name = str(ref)
    unreadable: tuple[type[Exception], ...] = (CorruptBlob, OSError, *_BROKEN)
    try:
        manifest = json.loads(content.read(digest))
        config = json.loads(content.read(manifest["config"]["digest"]))
        return _manifest_report(name, manifest, config, lambda d: content.open(d))
    except unreadable as e:
        raise LayerError(f"{image}: cannot read its layers ({type(e).__name__}: {e})") from None


def _manifest_report(name: str, manifest: dict[str, Any], config: dict[str, Any],
                     open_blob: Callable[[str], AbstractContextManager[Any]]) -> LayerReport:
    """The layers a manifest lists, named by the config's history (the steps that made a layer, in order)."""
    layers = [str(d["digest"]) for d in manifest.get("layers") or []]
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    made = [_created_by(h) for h in config.get("history") or [] if not h.get("empty_layer")]
    if len(made) != len(layers):
        made = [f"layer {n}" for n in range(1, len(layers) + 1)]
    sources = [LayerSource(made[n], partial(_blob_entries, partial(open_blob, d)), None,
                           diff_ids[n] if n < len(diff_ids) else d) for n, d in enumerate(layers)]
    return analyze(name, sources)


def _created_by(entry: dict[str, Any]) -> str:
    text = str(entry.get("created_by") or entry.get("comment") or "?").removesuffix(" # buildkit")
    return " ".join(text.removeprefix("/bin/sh -c #(nop) ").split())  # docker's legacy builder's prefix


def _archive_report(path: Path, platform: str) -> LayerReport:
    """An OCI archive (`--output type=oci`, index.json) or a docker one (manifest.json)."""
    from workbench.image.manifests import select_platform
    from workbench.image.registry_errors import RegistryError

    broken: tuple[type[Exception], ...] = (*_BROKEN, RegistryError)

    try:
        tar = tarfile.open(path)
    except tarfile.TarError:
        raise LayerError(f"{path}: not an image archive (not a tar file)") from None
    except OSError as e:
        raise LayerError(f"{path}: {e.strerror}") from None
    with tar:
        def member(name: str) -> IO[bytes]:
            f = tar.extractfile(name.removeprefix("./"))
            if f is None:
                raise KeyError(name)
            return f

        def blob(digest: str) -> IO[bytes]:
            algo, _, hexdigest = digest.partition(":")
            return member(f"blobs/{algo}/{hexdigest}")

        try:
            names = set(tar.getnames())
            if "index.json" in names:
                doc = json.load(member("index.json"))
                while "manifests" in doc:
                    entries = doc["manifests"]
                    pick = entries[0] if len(entries) == 1 else select_platform(doc, platform, str(path))
                    doc = json.load(blob(str(pick["digest"])))
                manifest = doc
                config = json.load(blob(str(manifest["config"]["digest"])))
                return _manifest_report(path.name, manifest, config, blob)
            if "manifest.json" in names:
                first = json.load(member("manifest.json"))[0]
                config = json.load(member(first["Config"]))
                layers = [{"digest": name} for name in first["Layers"]]
                return _manifest_report(path.name, {"layers": layers}, config, member)
        except broken as e:
            raise LayerError(f"{path}: a broken image archive ({type(e).__name__}: {e})") from None
    raise LayerError(f"{path}: not an image archive (no index.json or manifest.json)")
