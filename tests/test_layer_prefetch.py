"""Layers compressed while the build still runs (workbench.exporter.prefetch): a layer of the exported image is
made as soon as its step completes, before the later steps run; the blobs are the ones the export alone writes;
other stages' layers and pushes are left to the export; a failed build leaves no partial blob."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workbench.build import run_build
from workbench.progress.events import Event, EventBus, VertexCompleted, VertexStarted
from workbench.request import BuildFailure, BuildRequest, parse_output
from workbench.worker import Worker

pytestmark = pytest.mark.real
BASE = "localhost:5055/busybox"


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    rnd = random.Random(19)
    for name in ("a", "b", "other"):
        (ctx / name).mkdir()
        for i in range(3):
            text = b"".join(b"%s line %d of %d\n" % (name.encode(), j, rnd.randrange(1 << 30)) for j in range(60_000))
            (ctx / name / f"f{i}.txt").write_bytes(text)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def _build(ctx: Path, root: Path, output: str, sink: Callable[[Event], None] | None = None,
           no_cache: bool = False) -> list[Event]:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    if sink is not None:
        bus.subscribe(sink)
    run_build(BuildRequest(ctx, ctx / "Dockerfile", outputs=[parse_output(output)], root=root,
                           no_cache=no_cache), bus)
    return events


def _snapshots(events: list[Event]) -> dict[str, str]:
    """Step name -> the top snapshot it made."""
    return {e.name: e.snapshot for e in events if isinstance(e, VertexCompleted) and e.snapshot}


def _layer_digests(oci_tar: Path) -> list[str]:
    import tarfile

    with tarfile.open(oci_tar) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
    return [layer["digest"] for layer in manifest["layers"]]


def test_a_layer_is_compressed_before_the_later_steps_run(registry: str, tmp_path: Path, root: Path) -> None:
    """The step after `COPY a` starts only once `COPY a`'s layer is remembered in the store: without the
    prefetch it never would be before the export, and the wait below gives up."""
    ctx = _context(tmp_path, f"FROM {BASE}\nCOPY a /a\nCOPY b /b\nRUN echo done > /done\n")
    made: dict[str, str] = {}
    seen_before_next: list[str] = []

    def sink(event: Event) -> None:
        if isinstance(event, VertexCompleted) and "COPY a" in event.name:
            made["a"] = event.snapshot
        if isinstance(event, VertexStarted) and "COPY b" in event.name:
            worker = Worker(root)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    blob = worker.store.layer_blob(made["a"])
                    if blob is not None and worker.content.has(blob.digest):
                        seen_before_next.append(blob.digest)
                        return
                    time.sleep(0.05)
            finally:
                worker.close()

    out = tmp_path / "image.tar"
    _build(ctx, root, f"type=oci,dest={out}", sink)
    assert seen_before_next, "COPY a's layer was not compressed while the build went on"
    assert seen_before_next[0] in _layer_digests(out)


def test_the_blobs_are_the_ones_the_export_writes_alone(registry: str, tmp_path: Path, root: Path) -> None:
    """Each layer made in the background (taken before the last step runs, so not the export's) is byte for byte
    the tar, compressed, that the export itself writes of that snapshot, and is the image's."""
    import io

    from workbench.snapshot.layers import write_layer

    ctx = _context(tmp_path, f"FROM {BASE}\nCOPY a /a\nCOPY b /b\nRUN echo done > /done\n")
    made: dict[str, str] = {}
    early: dict[str, str] = {}  # snapshot -> the blob remembered for it before the RUN started

    def sink(event: Event) -> None:
        if isinstance(event, VertexCompleted) and "COPY" in event.name:
            made[event.name] = event.snapshot
        if isinstance(event, VertexStarted) and "RUN echo done" in event.name:
            worker = Worker(root)
            try:
                deadline = time.monotonic() + 30
                while len(early) < 2 and time.monotonic() < deadline:
                    for snapshot in made.values():
                        blob = worker.store.layer_blob(snapshot)
                        if blob is not None and worker.content.has(blob.digest):
                            early[snapshot] = blob.digest
                    time.sleep(0.05)
            finally:
                worker.close()

    out = tmp_path / "image.tar"
    _build(ctx, root, f"type=oci,dest={out}", sink)
    assert len(early) == 2, (made, early)
    worker = Worker(root)
    try:
        for snapshot, digest in early.items():
            again = io.BytesIO()
            assert write_layer(worker.snapshots.path(snapshot), again)[1] == digest
            assert digest in _layer_digests(out)
    finally:
        worker.close()


def test_other_stages_and_pushes_are_left_to_the_export(registry: str, tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, f"FROM {BASE} AS other\nCOPY other /other\n"
                             f"FROM {BASE}\nCOPY a /a\nCOPY --from=other /other/f0.txt /f0\nCOPY b /b\n"
                             "RUN sleep 2\n")  # time enough to compress every layer the prefetch takes
    events = _build(ctx, root, f"type=oci,dest={tmp_path / 'image.tar'}")
    snaps = _snapshots(events)
    worker = Worker(root)
    try:
        other = next(s for n, s in snaps.items() if "COPY other" in n)
        first = next(s for n, s in snaps.items() if "COPY a" in n)
        assert worker.store.layer_blob(other) is None  # never part of the image: never compressed
        assert worker.store.layer_blob(first) is not None
    finally:
        worker.close()

    from workbench.exporter.prefetch import prefetch_layers
    from workbench.frontend.dockerfile.convert import ConvertOptions, convert

    target = convert((ctx / "Dockerfile").read_text(), ConvertOptions(),
                     lambda ref, platform: (f"{BASE}@sha256:{'0' * 64}", "sha256:" + "1" * 64, {})).vertex
    worker = Worker(root)
    try:  # a push streams its layers while the export compresses them: nothing is taken early
        pushed = parse_output(f"type=image,name={BASE}-prefetch:1,push=true")
        assert prefetch_layers([pushed, parse_output(f"type=oci,dest={tmp_path / 'x.tar'}")], worker, target,
                               EventBus()) is None
        stored = prefetch_layers([parse_output("type=image,name=prefetch:1")], worker, target, EventBus())
        assert stored is not None
        stored.close()
    finally:
        worker.close()


def test_a_failed_build_leaves_no_partial_blob(registry: str, tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, f"FROM {BASE}\nCOPY a /a\nRUN exit 3\n")
    with pytest.raises(BuildFailure):
        _build(ctx, root, f"type=oci,dest={tmp_path / 'image.tar'}")
    assert not (tmp_path / "image.tar").exists()
    ingest = root / "content" / "ingest"
    assert not ingest.exists() or not any(ingest.iterdir())
    worker = Worker(root)
    try:  # whatever was stored is whole: every remembered blob is in the content store, intact
        for _, blob in worker.store.layer_blobs().items():
            assert worker.content.has(blob.digest)
            worker.content.read(blob.digest)  # verified against its digest
    finally:
        worker.close()


def test_an_inline_cache_names_the_layers_the_image_has(registry: str, tmp_path: Path, root: Path) -> None:
    """`--cache-to type=inline` with a non-default level: the inline cache is made once the layer being
    compressed in the background is done, so it names that blob, the one the manifest lists (it used to
    compress the layer again at the default level meanwhile, and name a blob the image does not have)."""
    import base64
    import subprocess
    import tarfile

    from tests.conftest import WORKBENCH

    ctx = _context(tmp_path, f"FROM {BASE}\nCOPY a /a\nRUN echo done > /done\n")
    rnd = random.Random(5)
    words = [b"%x" % rnd.getrandbits(40) for _ in range(4000)]
    (ctx / "a" / "big.txt").write_bytes(b" ".join(rnd.choice(words) for _ in range(4_000_000)))
    out = tmp_path / "image.tar"
    proc = subprocess.run([*WORKBENCH, "build", "--root", str(root), "--progress", "plain", "--cache-to", "type=inline",
                           "--output", f"type=oci,dest={out},compression-level=9", str(ctx)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    layers = set(_layer_digests(out))
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))  # type: ignore[arg-type]
    inline = json.loads(base64.b64decode(config["workbench.cache.v0"]))
    named = {layer["digest"] for layer in inline["layers"]}
    assert named and named <= layers, (named, layers)
