"""Image archives: docker-archive (`docker save` / `docker load`) and OCI layout tars, and rootfs imports.

The docker archive written here is BuildKit's: an OCI image layout (oci-layout, index.json, blobs/sha256/...)
plus docker's manifest.json and repositories, whose Config and Layers point at the same blob files, so
`docker load`, `skopeo copy docker-archive:` and OCI tools all read it. Loading accepts that, a classic
`docker save` archive (<id>/layer.tar, uncompressed) and an OCI layout tar.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import IO, Any

from workbench.image.config import CONFIG, INDEX, LAYER_GZIP, LAYER_TAR, MANIFEST, build_manifest, dumps
from workbench.image.content import ContentStore, CorruptBlob, DigestMismatch
from workbench.image.oci_layout import REF_NAME, ArchiveWriter
from workbench.image.reference import parse_reference
from workbench.image.store import ImageStore, ImageStoreError

LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
CONTAINERD_NAME = "io.containerd.image.name"


class ArchiveError(Exception):
    """A malformed archive or one that refers to blobs it does not hold; the message names the file."""


def _manifest(store: ContentStore, digest: str, names: list[str]) -> dict[str, Any]:
    try:
        doc = json.loads(store.read(digest))
    except CorruptBlob as e:
        raise e.for_image(_image_name(names)) from None
    if "manifests" in doc:
        raise ArchiveError(f"image {digest} is an index; a docker archive holds single-platform images")
    return dict(doc)


def write_docker_archive(dest: Path, store: ContentStore, images: list[tuple[str, list[str]]],
                         what: str = "--output type=docker") -> None:
    """Write a docker-archive tar of `images` ([(manifest digest, [names])]) to `dest` (atomically, through
    `atomic_file`: a symlink at `dest` is replaced, never followed).

    Names are written as docker shows them ("busybox:latest", "localhost:5000/app:1.0"). Blobs are verified
    as they are copied: a corrupt one is CorruptBlob (naming its image when the image has a name), and
    nothing is written.
    """
    from workbench.fsutil.destination import atomic_file

    dest = Path(dest)
    entries: list[dict[str, Any]] = []
    index_descs: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    blobs: list[str] = []
    owner: dict[str, str] = {}  # blob → the name of the image named in errors about it ("" if it has none)
    image_of: dict[str, str] = {}  # blob → the manifest digest of that image
    for digest, names in images:
        manifest = _manifest(store, digest, names)
        layers = [str(d["digest"]) for d in manifest.get("layers") or []]
        config = str(manifest["config"]["digest"])
        tags = [_familiar(n) for n in names]
        entries.append({"Config": _blob_name(config), "RepoTags": tags,
                        "Layers": [_blob_name(d) for d in layers]})
        raw = store.read(digest)
        for tag in tags or [""]:
            desc: dict[str, Any] = {"mediaType": manifest.get("mediaType") or MANIFEST, "digest": digest,
                                    "size": len(raw)}
            if tag:
                full = str(parse_reference(tag))
                desc["annotations"] = {CONTAINERD_NAME: full, REF_NAME: parse_reference(tag).tag or "latest"}
            index_descs.append(desc)
        for tag in tags:
            repo, _, t = tag.rpartition(":")
            if layers:
                repositories.setdefault(repo, {})[t] = layers[-1].split(":", 1)[1]
        for d in [digest, config, *layers]:
            owner.setdefault(d, _image_name(names))
            image_of.setdefault(d, digest)
            if d not in blobs:
                blobs.append(d)
    for d in blobs:
        if not store.has(d):
            if (corrupt := store.corrupt(d)) is not None:
                raise corrupt.for_image(owner[d])
            raise ArchiveError(f"blob {d} of image {owner[d] or image_of[d]} is not in the content store "
                               f"{store.root}")
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": index_descs}
    with atomic_file(dest, what) as out, ArchiveWriter(out) as tar:
        tar.add_dir("blobs/")
        tar.add_dir("blobs/sha256/")
        for d in blobs:
            try:
                tar.add_blob(store, d)
            except CorruptBlob as e:
                raise e.for_image(owner[d]) from None
        tar.add_bytes("index.json", dumps(index))
        tar.add_bytes("manifest.json", dumps(entries))
        tar.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if repositories:
            tar.add_bytes("repositories", dumps(repositories))


def _image_name(names: list[str]) -> str:
    return str(parse_reference(names[0])) if names else ""


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _familiar(name: str) -> str:
    ref = parse_reference(name)
    repo = ref.name
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
            break
    return f"{repo}:{ref.tag or 'latest'}"


# -- loading --------------------------------------------------------------------------------------------------


def _layer_media_type(head: bytes, docker: bool) -> str:
    if head[:2] == b"\x1f\x8b":
        return "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else LAYER_GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return LAYER_ZSTD
    return "application/vnd.docker.image.rootfs.diff.tar" if docker else LAYER_TAR


class _Archive:
    """Random access to the members of an image tar (by normalised name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {os.path.normpath(m.name).lstrip("/"): m for m in self.tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as e:
            raise ArchiveError(f"{path}: not a readable tar archive: {e}") from None

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(os.path.normpath(name).lstrip("/"))
        f = self.tar.extractfile(member) if member is not None else None
        if f is None:
            raise ArchiveError(f"{self.path}: the archive has no file {name!r}")
        return f

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.open(name).read())
        except ValueError:
            raise ArchiveError(f"{self.path}: {name} is not valid JSON") from None

    def store_blob(self, store: ContentStore, name: str, expected: str | None = None) -> tuple[str, int, bytes]:
        """Copy a member into the store; (digest, size, first bytes). A member named by its digest
        (blobs/sha256/<hex>, <hex>.json) is verified against it; DigestMismatch → ArchiveError."""
        base = os.path.basename(name).removesuffix(".json")
        if expected is None and len(base) == 64 and all(c in "0123456789abcdef" for c in base):
            expected = "sha256:" + base
        f = self.open(name)
        head = f.read(8)
        try:
            with store.writer(expected) as w:
                w.write(head)
                shutil.copyfileobj(f, w, 1 << 20)
        except DigestMismatch as e:
            raise ArchiveError(f"{self.path}: {name}: {e}") from None
        return w.digest, w.size, head


def load_archive(path: Path, images: ImageStore, name: str | None = None) -> list[tuple[str, str]]:
    """Load an OCI layout tar or a docker archive into the image store; [(name or "", manifest digest)].

    Images without a full name in the archive are stored under `name` if given, else only by digest (and
    reported with an empty name).
    """
    archive = _Archive(Path(path))
    try:
        if "manifest.json" in archive.members:
            loaded = _load_docker(archive, images.content)
        elif "index.json" in archive.members:
            loaded = _load_oci(archive, images.content)
        else:
            raise ArchiveError(f"{path}: neither a docker archive (manifest.json) nor an OCI layout (index.json)")
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as e:
        # The archive's JSON documents are not of the shapes the formats define (a number where a list
        # goes, a descriptor without a digest, indexes nested past reason): say so, without a traceback.
        if isinstance(e, ArchiveError):
            raise
        what = "indexes nested too deep" if isinstance(e, RecursionError) else f"{type(e).__name__}: {e}"
        raise ArchiveError(f"{path}: not a valid image archive ({what})") from None
    finally:
        archive.tar.close()
    out = []
    for names, digest in loaded:
        if name:
            names = [name]
        for n in names:
            try:
                images.tag(n, digest)
            except ImageStoreError as e:
                raise ArchiveError(f"{path}: image name {n!r}: {e}") from None
            out.append((str(parse_reference(n)), digest))
        if not names:
            out.append(("", digest))
    return out


def _load_docker(archive: _Archive, store: ContentStore) -> list[tuple[list[str], str]]:
    entries = archive.read_json("manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ArchiveError(f"{archive.path}: manifest.json is not a list of images")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or "Config" not in entry:
            raise ArchiveError(f"{archive.path}: manifest.json entry without Config")
        config_digest, _, _ = archive.store_blob(store, entry["Config"])
        config = json.loads(store.read(config_digest))
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layer_names = entry.get("Layers") or []
        if len(diff_ids) != len(layer_names):
            raise ArchiveError(f"{archive.path}: {entry['Config']} lists {len(diff_ids)} layers, "
                               f"manifest.json {len(layer_names)}")
        layers = []
        for layer in layer_names:
            digest, size, head = archive.store_blob(store, layer)
            layers.append({"mediaType": _layer_media_type(head, docker=False), "digest": digest, "size": size})
        raw_config = store.read(config_digest)
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                    "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(raw_config)},
                    "layers": layers}
        digest = store.write(dumps(manifest))
        out.append(([str(t) for t in entry.get("RepoTags") or []], digest))
    return out


def _load_oci(archive: _Archive, store: ContentStore) -> list[tuple[list[str], str]]:
    index = archive.read_json("index.json")
    descs = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descs, list) or not descs:
        raise ArchiveError(f"{archive.path}: index.json lists no images")
    by_digest: dict[str, list[str]] = {}
    for desc in descs:
        digest = str(desc.get("digest", ""))
        _copy_tree(archive, store, digest)
        annotations = desc.get("annotations") or {}
        names = by_digest.setdefault(digest, [])
        full = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""
        if full and ("/" in full or ":" in full) and not full.startswith("sha256:"):
            try:
                parse_reference(full)
                names.append(full)
            except ValueError:
                pass
    return [(names, digest) for digest, names in by_digest.items()]


def _copy_tree(archive: _Archive, store: ContentStore, digest: str) -> None:
    """Copy the manifest or index `digest` and everything under it that the archive holds, verified."""
    try:
        blob = _blob_name(digest)
    except IndexError:
        raise ArchiveError(f"{archive.path}: malformed digest {digest!r}") from None
    archive.store_blob(store, blob, digest)
    doc = json.loads(store.read(digest))
    for child in doc.get("manifests") or []:
        if _blob_name(child["digest"]) in archive.members:
            _copy_tree(archive, store, str(child["digest"]))
    if isinstance(doc.get("config"), dict):
        for desc in [doc["config"], *(doc.get("layers") or [])]:
            archive.store_blob(store, _blob_name(desc["digest"]), str(desc["digest"]))


# -- importing a rootfs ----------------------------------------------------------------------------------------


def import_rootfs(path: Path, images: ImageStore, name: str | None, changes: list[str] | None = None,
                  platform: str = "linux/amd64") -> str:
    """`docker import`: make a one-layer image from a rootfs tar (plain or compressed); returns its digest.

    `changes` are Dockerfile-like lines applied to the config: ENV K=V, CMD, ENTRYPOINT (JSON or shell form),
    WORKDIR, USER, LABEL K=V, EXPOSE.
    """
    from workbench.fsutil.compress import write_compressed
    from workbench.image.config import add_history, new_image

    store = images.content
    try:
        src = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise ArchiveError(f"{path}: {e.strerror}") from None
    with src:
        head = src.read(4)
        src.seek(0)
        if head[:2] == b"\x1f\x8b":
            raw: IO[bytes] = gzip.GzipFile(fileobj=src)  # type: ignore[assignment]
        elif head == b"\x28\xb5\x2f\xfd":
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(src)  # type: ignore[assignment]
        else:
            raw = src
        with store.writer() as w:
            diff_id = write_compressed(lambda dst: shutil.copyfileobj(raw, dst, 1 << 20), w, "gzip",
                                       digest_out=False)[0]
    try:
        tarfile.open(store.path(w.digest), "r:gz").next()
    except (tarfile.TarError, OSError, EOFError):
        raise ArchiveError(f"{path}: not a tar archive (plain, gzip or zstd)") from None
    config = new_image(None, platform)
    config["rootfs"]["diff_ids"] = [diff_id]
    for change in changes or []:
        _apply_change(config["config"], change)
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")  # reproducible imports, as docker/buildkit honour it
    created = None
    if epoch.isdigit():
        import time

        created = config["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))
    add_history(config, f"import {Path(path).name}", comment="imported", created=created)
    digest = build_manifest(store, config, [{"mediaType": LAYER_GZIP, "digest": w.digest, "size": w.size}])
    if name:
        images.tag(name, digest)
    return digest


def _apply_change(cfg: dict[str, Any], change: str) -> None:
    import shlex

    word, _, rest = change.strip().partition(" ")
    word, rest = word.upper(), rest.strip()

    def command() -> list[str]:
        if rest.startswith("["):
            try:
                value = json.loads(rest)
            except ValueError:
                raise ArchiveError(f"--change {change!r}: invalid JSON") from None
            return [str(x) for x in value]
        return ["/bin/sh", "-c", rest]

    def pairs() -> list[tuple[str, str]]:
        out = []
        for item in shlex.split(rest):
            k, eq, v = item.partition("=")
            if not eq:
                raise ArchiveError(f"--change {change!r}: expected KEY=VALUE")
            out.append((k, v))
        return out

    if word == "ENV":
        env = [e for e in cfg.get("Env") or []]
        for k, v in pairs():
            env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
        cfg["Env"] = env
    elif word == "CMD":
        cfg["Cmd"] = command()
    elif word == "ENTRYPOINT":
        cfg["Entrypoint"] = command()
    elif word == "WORKDIR":
        cfg["WorkingDir"] = rest
    elif word == "USER":
        cfg["User"] = rest
    elif word == "LABEL":
        cfg.setdefault("Labels", {}).update(dict(pairs()))
    elif word == "EXPOSE":
        for port in rest.split():
            cfg.setdefault("ExposedPorts", {})[port if "/" in port else port + "/tcp"] = {}
    else:
        raise ArchiveError(f"--change {change!r}: unsupported instruction {word} "
                           "(ENV, CMD, ENTRYPOINT, WORKDIR, USER, LABEL, EXPOSE)")


def write_tar_rootfs(dest: Path, root: Path, what: str = "--output type=tar") -> None:
    """`--output type=tar`: the filesystem under `root` as one tar (owners, modes, links kept), atomically
    (through `atomic_file`: a symlink at `dest` is replaced, never followed)."""
    import subprocess

    from workbench.fsutil.destination import atomic_file

    with atomic_file(dest, what) as out:
        out.flush()
        proc = subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", "-", "."],
                              stdout=out.fileno(), stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise OSError(f"writing {dest} failed: {proc.stderr.strip()}")
