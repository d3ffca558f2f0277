"""Builds of different contexts that run at once on one daemon each get their own files.

BuildKit merges equal vertices of the builds it runs at the same time; a local source without a session or a
unique ID is the same vertex for every context of that name, and one build's session then serves its files to
the other (seen on buildkitd v0.20: a COPY gave the other build's file). Our graph names each local source with
a `local.unique` derived from the context and the state root's secret node ID, as BuildKit's llb.Local does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker_daemon import docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import ENV, addr  # noqa: F401  (the fixture)
from workbench.remote.marshal import marshal
from workbench.remote.proto import ops_pb2 as pb
from workbench.remote.solve import local_unique_id

DOCKERFILE = "FROM localhost:5055/busybox\nCOPY f /f\nRUN cat /f > /g\n"


def _local_sources(ctx: Path, root: Path) -> list[tuple[str, dict[str, str]]]:
    from workbench.frontend.dockerfile.convert import ConvertOptions, convert

    def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, object]]:
        return ref, "sha256:" + "1" * 64, {"architecture": "amd64", "os": "linux", "config": {}}

    vertex = convert(DOCKERFILE, ConvertOptions(build_args={}, target=None, filename="Dockerfile"), resolve).vertex
    definition = pb.Definition.FromString(marshal(vertex, DOCKERFILE, shared_key_hint="context",
                                                  unique_id=local_unique_id(ctx, root)).data)
    ops = [pb.Op.FromString(d) for d in getattr(definition, "def")]
    return [(op.source.identifier, dict(op.source.attrs)) for op in ops
            if op.WhichOneof("op") == "source" and op.source.identifier.startswith("local://")]


def test_each_context_and_root_has_its_own_local_source(tmp_path: Path) -> None:
    a, b, root = tmp_path / "a", tmp_path / "b", tmp_path / "root"
    for ctx in (a, b):
        ctx.mkdir()
    ours_a = _local_sources(a, root)
    assert ours_a and all(attrs.get("local.unique") for _, attrs in ours_a)
    assert _local_sources(a, root) == ours_a  # a rebuild's vertices are the last build's: its cache keys hold
    assert _local_sources(b, root) != ours_a
    assert _local_sources(a, tmp_path / "other-root") != ours_a  # another root (user) has another node ID


@pytest.mark.real
def test_builds_of_two_contexts_at_once_get_their_own_files(tmp_path: Path, addr: str) -> None:  # noqa: F811
    contexts = {}
    for name in ("a", "b"):
        ctx = tmp_path / name
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        (ctx / "f").write_text(f"only in {name}\n" * 20000)  # big enough for the two transfers to overlap
        contexts[name] = ctx
    for round_ in range(2):
        procs = {}
        for name, ctx in contexts.items():
            (ctx / "f").write_text(f"only in {name}, round {round_}\n" * 20000)
            out = tmp_path / f"out-{name}-{round_}"
            procs[name] = (out, subprocess.Popen(
                [sys.executable, "-m", "workbench.cli", "build", "--root", str(tmp_path / "root"), "--addr", addr,
                 "--progress", "plain", "--output", f"type=local,dest={out}", str(ctx)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV))
        for name, (out, proc) in procs.items():
            log, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, log[-3000:]
            assert (out / "g").read_text() == (contexts[name] / "f").read_text(), f"{name} got another build's file"
