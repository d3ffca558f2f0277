"""`workbench image ls|rm|tag|load|save|import|pull|push`: the local image store from the command line."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from workbench.build_options import ROOT_HELP


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `image` command and its subcommands to the top-level parser."""
    img = sub.add_parser("image", help="manage the local image store (ls, rm, tag, load, save, import, pull, push)")
    isub = img.add_subparsers(dest="image_command", required=True)

    def with_root(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--root", help=ROOT_HELP)
        return p

    ls = with_root(isub.add_parser("ls", help="list images"))
    ls.add_argument("-q", "--quiet", action="store_true", help="only digests")
    ls.add_argument("--digests", action="store_true", help="show full digests")
    rm = with_root(isub.add_parser("rm", help="remove image names (blobs go at the next prune)"))
    rm.add_argument("images", nargs="+", metavar="IMAGE")
    tag = with_root(isub.add_parser("tag", help="name an image: tag SOURCE TARGET"))
    tag.add_argument("source")
    tag.add_argument("target")
    load = with_root(isub.add_parser("load", help="load an OCI layout tar or a docker archive"))
    load.add_argument("-i", "--input", required=True, help="the archive")
    load.add_argument("-t", "--tag", help="name for the loaded image (when the archive names none or one)")
    save = with_root(isub.add_parser("save", help="write images to a docker archive (also an OCI layout)"))
    save.add_argument("-o", "--output", required=True, help="the tar to write")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    imp = with_root(isub.add_parser("import", help="make an image from a rootfs tar (like docker import)"))
    imp.add_argument("file", help="the rootfs tar (plain, gzip or zstd)")
    imp.add_argument("reference", nargs="?", help="name for the image")
    imp.add_argument("-c", "--change", action="append", default=[],
                     help="apply a Dockerfile instruction to the config (ENV, CMD, ENTRYPOINT, WORKDIR, USER, LABEL)")
    imp.add_argument("--platform", default="linux/amd64")
    pull = with_root(isub.add_parser("pull", help="pull an image from a registry into the store"))
    pull.add_argument("reference")
    pull.add_argument("--platform", default="linux/amd64")
    push = with_root(isub.add_parser("push", help="push a stored image to its registry"))
    push.add_argument("reference")


def _fail(message: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return 1


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n:.3g}GB"


def _ago(ts: float) -> str:
    import time

    s = max(0, time.time() - ts)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if s >= size:
            n = int(s // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago" if s >= 1 else "Less than a second ago"


def run(args: argparse.Namespace) -> int:
    """Run `workbench image ...`; returns the exit status."""
    from workbench.image.archive import ArchiveError
    from workbench.image.content import CorruptBlob
    from workbench.image.registry_errors import RegistryError
    from workbench.image.store import ImageStore, ImageStoreError
    from workbench.request import default_root

    images = ImageStore(Path(args.root) if args.root else default_root())
    try:
        return _COMMANDS[args.image_command](images, args)
    except (ImageStoreError, ArchiveError, RegistryError, CorruptBlob) as e:
        return _fail(str(e))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the CLI says it in its one disk-full line
        return _fail(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}".lstrip(": "))


def _ls(images, args) -> int:  # type: ignore[no-untyped-def]
    rows = images.entries()
    if args.quiet:
        for i in rows:
            print(i.digest if args.digests else i.digest.split(":", 1)[1][:12])
        return 0
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for i in rows:
        repo, tag = i.familiar
        ident = i.digest if args.digests else i.digest.split(":", 1)[1][:12]
        table.append((repo, tag, ident, _ago(i.created), _human(images.size(i.digest))))
    widths = [max(len(r[c]) for r in table) for c in range(5)]
    for r in table:
        print("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _rm(images, args) -> int:  # type: ignore[no-untyped-def]
    status = 0
    for name in args.images:
        try:
            gone = images.remove(name)
        except Exception as e:  # noqa: BLE001 - report each and go on, as docker rmi does
            print(f"Error: {e}", file=sys.stderr)
            status = 1
            continue
        repo, tag = gone.familiar
        print(f"Untagged: {repo}:{tag}")
    return status


def _tag(images, args) -> int:  # type: ignore[no-untyped-def]
    images.tag(args.target, images.resolve(args.source).digest)
    return 0


def _load(images, args) -> int:  # type: ignore[no-untyped-def]
    from workbench.image.archive import load_archive

    for name, digest in load_archive(Path(args.input), images, args.tag):
        if name:
            repo, tag = images.get(name).familiar
            print(f"Loaded image: {repo}:{tag}")
        else:
            print(f"Loaded image ID: {digest}")
    return 0


def _save(images, args) -> int:  # type: ignore[no-untyped-def]
    from workbench.fsutil.destination import DestinationError
    from workbench.image.archive import write_docker_archive
    from workbench.image.content import CorruptBlob

    chosen: dict[str, list[str]] = {}
    for name in args.images:
        found = images.resolve(name)
        names = chosen.setdefault(found.digest, [])
        if not found.name.startswith("sha256:") and found.name not in names:
            names.append(found.name)
    try:
        write_docker_archive(Path(args.output), images.content, list(chosen.items()), "image save")
    except DestinationError as e:
        return _fail(str(e))
    except CorruptBlob as e:
        return _fail(str(e.for_image(args.images[0])))
    except OSError as e:
        return _fail(f"writing {args.output}: {e.strerror or e}")
    return 0


def _import(images, args) -> int:  # type: ignore[no-untyped-def]
    from workbench.image.archive import import_rootfs

    print(import_rootfs(Path(args.file), images, args.reference, args.change, args.platform))
    return 0


def _pull(images, args) -> int:  # type: ignore[no-untyped-def]
    from workbench.image.content import CorruptBlob
    from workbench.image.pull import pull
    from workbench.image.registry_errors import RegistryError
    from workbench.image.store import normalise

    ref = normalise(args.reference)
    try:
        image = pull(ref, images.content, args.platform)
    except (CorruptBlob, RegistryError) as e:
        if not isinstance(e, CorruptBlob) and not isinstance(e.__context__, CorruptBlob):
            raise
        image = pull(ref, images.content, args.platform)  # the bad blob left the store: fetch it again
    images.tag(str(ref), image.manifest_digest)
    print(f"Digest: {image.manifest_digest}")
    print(f"Status: downloaded image for {ref}")
    return 0


def _push(images, args) -> int:  # type: ignore[no-untyped-def]
    from workbench.image.push import push_image
    from workbench.image.store import normalise

    found = images.resolve(args.reference)
    ref = normalise(found.name)
    digest = push_image(ref, images.content, found.digest)
    print(f"{ref.tag or 'latest'}: digest: {digest} size: {len(images.content.read(digest))}")
    return 0


_COMMANDS = {"ls": _ls, "rm": _rm, "tag": _tag, "load": _load, "save": _save, "import": _import,
             "pull": _pull, "push": _push}
