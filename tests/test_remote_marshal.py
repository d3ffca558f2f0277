"""Our graph as BuildKit's pb.Definition (workbench.remote.marshal): op kinds and fields, determinism, the v0.8
fallbacks and refusals, errdefs errors back to Dockerfile lines, and (when a buildkitd is up) a real build of the
Definition through buildctl compared with our own engine's output."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFORMANCE, wb
from workbench.frontend.dockerfile.convert import ConvertOptions, DockerfileError, convert
from workbench.frontend.dockerfile.dockerignore import load_dockerignore
from workbench.llb.ops import Vertex
from workbench.remote.marshal import MarshalError, marshal
from workbench.remote.marshal_caps import V08_CAPS
from workbench.remote.marshal_errors import format_solve_error, status_details
from workbench.remote.marshal_ops import op_bytes
from workbench.remote.proto import ops_pb2 as pb

sys.path.insert(0, str(CONFORMANCE))
import run as conformance_run  # noqa: E402

CASES = sorted(p.name for p in (CONFORMANCE / "cases").iterdir() if (p / "Dockerfile").exists())
BASE_DIGEST = "sha256:" + "ab" * 32
BUILDKIT_ADDR = os.environ.get("WB_BUILDKIT_ADDR", "unix:///tmp/bk/buildkitd.sock")
BUILDCTL = os.environ.get("WB_BUILDCTL", "/tmp/bk/buildctl")


def _resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
    """A registry-free resolver: every image is the busybox base at a fixed digest."""
    name = ref if ":" in ref.rsplit("/", 1)[-1] else ref + ":latest"
    return name, BASE_DIGEST, {"architecture": "amd64", "os": "linux",
                               "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}}


def _graph(text: str, **opts: Any) -> Vertex:
    return convert(text, ConvertOptions(**opts), _resolve).vertex


def _ops(data: bytes) -> list[pb.Op]:
    d = pb.Definition.FromString(data)
    return [pb.Op.FromString(b) for b in getattr(d, "def")]


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _exec(ops: list[pb.Op], word: str) -> pb.Op:
    return next(o for o in ops if o.WhichOneof("op") == "exec" and word in o.exec.meta.args[-1])


@pytest.mark.parametrize("case", CASES)
def test_conformance_case_marshals(case: str) -> None:
    case_dir = CONFORMANCE / "cases" / case
    meta = conformance_run.load_case(str(case_dir))
    text = (case_dir / "Dockerfile").read_text()
    patterns = load_dockerignore(case_dir / "context", case_dir / "Dockerfile")
    try:
        target = _graph(text, build_args=meta.get("args", {}), target=meta.get("target"),
                        excludes=tuple(patterns))
    except DockerfileError:  # a case BuildKit refuses before any LLB
        return
    m = marshal(target, text)
    d = pb.Definition.FromString(m.data)
    defs = list(getattr(d, "def"))
    assert len(defs) >= 2
    digests = [_digest(b) for b in defs]
    terminal = pb.Op.FromString(defs[-1])
    assert terminal.WhichOneof("op") is None and len(terminal.inputs) == 1
    assert terminal.inputs[0].digest == digests[-2]
    for i, b in enumerate(defs[:-1]):  # inputs before their users, every op with metadata
        assert all(inp.digest in digests[:i] for inp in pb.Op.FromString(b).inputs)
        assert digests[i] in d.metadata
    assert set(d.metadata) == set(digests)
    assert d.metadata[digests[-1]].caps["constraints"]
    assert d.Source.infos[0].data == text.encode()
    for loc in d.Source.locations.values():
        assert 1 <= loc.locations[0].ranges[0].start.line <= len(text.splitlines())


def test_same_graph_same_bytes() -> None:
    text = "FROM busybox\nARG A=1\nRUN --mount=type=cache,target=/c echo $A\nCOPY --chown=1:2 . /app/\n"
    first = marshal(_graph(text), text).data
    assert marshal(_graph(text), text).data == first
    assert marshal(_graph(text, build_args={"A": "2"}), text).data != first


def test_run_mounts_of_every_type() -> None:
    text = ("FROM busybox AS base\nRUN true\nFROM busybox\n"
            "RUN --mount=type=bind,from=base,source=/etc,target=/mnt/etc "
            "--mount=type=cache,id=c1,target=/var/cache,sharing=locked "
            "--mount=type=cache,target=/own,uid=5,gid=6,mode=0700 "
            "--mount=type=tmpfs,target=/tmp/t,size=1048576 "
            "--mount=type=secret,id=tok,target=/run/tok,uid=7,mode=0440,required=true "
            "--mount=type=ssh,id=agent "
            "--network=none --security=insecure echo mounts\n")
    m = marshal(_graph(text), text, network_host=True)
    ops = _ops(m.data)
    run = _exec(ops, "echo mounts")
    assert run.exec.network == pb.NONE and run.exec.security == pb.INSECURE
    mounts = {mt.dest: mt for mt in run.exec.mounts}
    assert [mt.dest for mt in run.exec.mounts][:5] == ["/", "/mnt/etc", "/own", "/tmp/t", "/var/cache"]
    assert mounts["/"].input == 0 and mounts["/"].output == 0
    bind = mounts["/mnt/etc"]
    assert bind.mountType == pb.BIND and bind.selector == "/etc" and bind.output == -1 and bind.input == 1
    assert run.inputs[1].digest != run.inputs[0].digest  # the `base` stage's RUN
    cache = mounts["/var/cache"]
    assert cache.mountType == pb.CACHE and cache.cacheOpt.ID == "c1" and cache.cacheOpt.sharing == pb.LOCKED
    assert cache.input == -1
    own = mounts["/own"]  # seeded with a dir of that owner and mode, as the Dockerfile frontend does
    assert own.selector == "/cache" and own.input == 2
    seed = next(o for o in ops if _digest(op_bytes(o)) == run.inputs[2].digest)
    assert seed.file.actions[0].mkdir.mode == 0o700
    assert seed.file.actions[0].mkdir.owner.user.byID == 5 and seed.file.actions[0].mkdir.owner.group.byID == 6
    assert mounts["/tmp/t"].mountType == pb.TMPFS and mounts["/tmp/t"].TmpfsOpt.size == 1048576
    secret = mounts["/run/tok"]
    assert secret.mountType == pb.SECRET and secret.secretOpt.ID == "tok" and secret.secretOpt.uid == 7
    assert secret.secretOpt.mode == 0o440 and not secret.secretOpt.optional
    ssh = mounts["/run/buildkit/ssh_agent.0"]
    assert ssh.mountType == pb.SSH and ssh.SSHOpt.ID == "agent" and ssh.SSHOpt.mode == 0o600
    caps = pb.Definition.FromString(m.data).metadata[_digest(op_bytes(run))].caps
    assert {"exec.mount.bind", "exec.mount.cache", "exec.mount.tmpfs.size", "exec.mount.secret",
            "exec.mount.ssh", "exec.meta.network", "exec.meta.security"} <= set(caps)


def test_op_bytes_are_gos() -> None:
    """The image source a BuildKit v0.20 daemon named sha256:0cf242b3… in its progress (it re-marshals each op
    with Go's protobuf, which writes the `op` oneof after platform and constraints)."""
    op = pb.Op(source=pb.SourceOp(identifier="docker-image://localhost:5055/busybox:latest@sha256:5427a5fb2c6b004f"
                                             "10d5920dfb07d312beca4d717b0b9f02a7790c2f1e347a87"),
               platform=pb.Platform(OS="linux", Architecture="amd64"))
    op.constraints.SetInParent()
    assert _digest(op_bytes(op)) == "sha256:0cf242b353c943720bd392b9f0da7e8690edc9a1e1063b1a791fc6333451d351"
    assert pb.Op.FromString(op_bytes(op)) == op


def test_network_host_only_when_asked() -> None:
    text = "FROM busybox\nRUN echo plain\n"
    assert _exec(_ops(marshal(_graph(text), text).data), "plain").exec.network == pb.UNSET
    assert _exec(_ops(marshal(_graph(text), text, network_host=True).data), "plain").exec.network == pb.HOST


def test_copy_chown_chmod_link_and_from() -> None:
    text = ("FROM busybox AS build\nWORKDIR /src\nRUN echo hi > out\n"
            "FROM busybox\nCOPY --chown=app:staff --chmod=640 a.txt /dst/\n"
            "COPY --from=build /src/out /final\nCOPY --link --chmod=u+x b.sh /bin/\n")
    m = marshal(_graph(text, excludes=("*.tmp",)), text)
    ops = _ops(m.data)
    copies = [(o, a.copy) for o in ops if o.WhichOneof("op") == "file" for a in o.file.actions
              if a.WhichOneof("action") == "copy"]
    by_src = {c.src: (o, c) for o, c in copies}
    _, a = by_src["/a.txt"]
    assert a.dest == "/dst/" and a.mode == 0o640 and a.owner.user.byName.name == "app"
    assert a.owner.group.byName.name == "staff" and a.followSymlink and a.allowWildcard and a.createDestPath
    o, out = by_src["/src/out"]
    assert out.dest == "/final" and out.mode == -1
    assert o.file.actions[0].secondaryInput == 1  # input 0: this stage's base, 1: the `build` stage
    _, link = by_src["/b.sh"]
    assert link.modeStr == "u+x"
    local = next(o for o in ops if o.WhichOneof("op") == "source" and o.source.identifier == "local://context")
    assert json.loads(local.source.attrs["local.excludepatterns"]) == ["*.tmp"]
    assert local.source.attrs["local.sharedkeyhint"] == "context"
    merge = next(o for o in ops if o.WhichOneof("op") == "merge")
    assert [i.input for i in merge.merge.inputs] == [0, 1]
    image = next(o for o in ops if o.WhichOneof("op") == "source" and "docker-image" in o.source.identifier)
    assert image.source.identifier == f"docker-image://busybox:latest@{BASE_DIGEST}"
    assert image.platform.OS == "linux" and image.platform.Architecture == "amd64"
    names = {m.names[d] for d in m.names}
    assert any("COPY --from=build /src/out /final" in n for n in names)


def test_args_env_and_heredocs() -> None:
    text = ("FROM busybox\nARG V=one\nENV E=${V}-two\n"
            "RUN <<EOF\necho $E > /e\nEOF\n"
            "COPY <<EOT /doc.txt\nhello ${E}\nEOT\n")
    m = marshal(_graph(text, build_args={"V": "uno"}), text)
    ops = _ops(m.data)
    run = _exec(ops, "echo $E")
    assert "E=uno-two" in run.exec.meta.env and "V=uno" in run.exec.meta.env
    mkfile = next(a.mkfile for o in ops if o.WhichOneof("op") == "file" for a in o.file.actions
                  if a.WhichOneof("action") == "mkfile")
    assert mkfile.path == "/EOT" and mkfile.data == b"hello uno-two\n" and mkfile.mode == 0o644
    copy = next(a.copy for o in ops if o.WhichOneof("op") == "file" for a in o.file.actions
                if a.WhichOneof("action") == "copy")
    assert (copy.src, copy.dest) == ("/EOT", "/doc.txt")
    d = pb.Definition.FromString(m.data)
    rd = _digest(op_bytes(run))
    rng = d.Source.locations[rd].locations[0].ranges[0]
    assert (rng.start.line, rng.end.line) == (4, 6)
    assert d.metadata[rd].description["llb.customname"].startswith("[")


def test_git_and_http_sources() -> None:
    text = ("FROM busybox\nADD --keep-git-dir https://example.com/org/repo.git#v1:sub /src/\n"
            "ADD git@example.com:org/other.git /other/\n"
            "ADD --checksum=sha256:" + "cd" * 32 + " https://example.com/f.tgz /f\n")
    ops = _ops(marshal(_graph(text), text).data)
    sources = {o.source.identifier: o.source.attrs for o in ops if o.WhichOneof("op") == "source"}
    https = sources["git://example.com/org/repo.git#v1:sub"]
    assert https["git.fullurl"] == "https://example.com/org/repo.git" and https["git.keepgitdir"] == "true"
    ssh = sources["git://example.com/org/other.git"]
    assert ssh["git.fullurl"] == "git@example.com:org/other.git" and ssh["git.mountsshsock"] == "default"
    http = sources["https://example.com/f.tgz"]
    assert http["http.checksum"] == "sha256:" + "cd" * 32 and http["http.filename"] == "f.tgz"
    with pytest.raises(MarshalError, match=r"^Dockerfile:2: .*source.git.subdir"):
        marshal(_graph(text), text, caps=V08_CAPS)


def test_no_cache_step_sets_ignore_cache() -> None:
    import dataclasses

    text = "FROM busybox\nRUN echo x\n"
    target = _graph(text)
    target = dataclasses.replace(target, ignore_cache=True)
    d = pb.Definition.FromString(marshal(target, text).data)
    assert any(md.ignore_cache for md in d.metadata.values())
    assert d.metadata[_digest(getattr(d, "def")[-1])].caps["meta.ignorecache"]
    assert sum(md.ignore_cache for md in d.metadata.values()) == 1
    text = "FROM busybox\nWORKDIR /w\nRUN echo x\nCOPY a /a\nCOPY <<EOF /doc\nhi\nEOF\n"
    d = pb.Definition.FromString(marshal(_graph(text), text, no_cache=True).data)
    ignored = set()
    for raw in getattr(d, "def"):
        op = pb.Op.FromString(raw)
        if d.metadata[_digest(raw)].ignore_cache:
            kind = op.WhichOneof("op")
            ignored.add(kind if kind != "file" else op.file.actions[0].WhichOneof("action"))
    # as BuildKit's Dockerfile frontend: --no-cache re-runs RUN, COPY and ADD; FROM, WORKDIR and the inline
    # document stay cached
    assert ignored == {"exec", "copy"}
    assert sum(md.ignore_cache for md in d.metadata.values()) == 3
    # ADD of a URL and of a git repository: their copies, not the sources (checked against their origin on
    # every build anyway); COPY --link: its copy and the merge that puts it on the base
    text = ("FROM busybox\nADD https://example.com/f.tgz /f\nADD https://example.com/r.git#v1 /r\n"
            "COPY --link a /a\n")
    d = pb.Definition.FromString(marshal(_graph(text), text, no_cache=True).data)
    marked: dict[str, list[bool]] = {}
    for raw in getattr(d, "def"):
        op = pb.Op.FromString(raw)
        kind = op.WhichOneof("op") or "terminal"
        if kind == "source":
            kind = op.source.identifier.split("://", 1)[0]
        marked.setdefault(kind, []).append(d.metadata[_digest(raw)].ignore_cache)
    assert marked["https"] == [False] and marked["git"] == [False] and marked["docker-image"] == [False]
    assert marked["file"] == [True, True, True] and marked["merge"] == [True]


def test_v08_merge_becomes_copies() -> None:
    text = "FROM busybox\nRUN echo a\nCOPY --link a.txt /x/\n"
    ops = _ops(marshal(_graph(text), text, caps=V08_CAPS).data)
    assert not any(o.WhichOneof("op") == "merge" for o in ops)
    top = ops[-2]
    assert top.WhichOneof("op") == "file" and len(top.inputs) == 2
    action = top.file.actions[0]
    assert action.input == 0 and action.secondaryInput == 1 and action.output == 0
    assert action.copy.src == "/" and action.copy.dest == "/" and action.copy.dirCopyContents
    d = pb.Definition.FromString(marshal(_graph(text), text, caps=V08_CAPS).data)
    assert not any("mergeop" in md.caps for md in d.metadata.values())


def test_v08_refuses_secret_env_naming_the_line() -> None:
    text = "FROM busybox\nRUN echo ok\nRUN --mount=type=secret,id=tok,env=TOKEN echo $TOKEN\n"
    marshal(_graph(text), text)  # fine on v0.20
    with pytest.raises(MarshalError) as e:
        marshal(_graph(text), text, caps=V08_CAPS)
    assert str(e.value).startswith("Dockerfile:3: ") and "exec.secretenv" in str(e.value)
    assert "\n" not in str(e.value) and e.value.location is not None and e.value.location.start_line == 3


def test_v08_refuses_copy_exclude() -> None:
    text = "FROM busybox\nCOPY --exclude=*.md . /app/\n"
    with pytest.raises(MarshalError, match=r"^Dockerfile:2: .*file.copy.includeexcludepatterns"):
        marshal(_graph(text), text, caps=V08_CAPS)


def test_scratch_target_is_refused() -> None:
    with pytest.raises(MarshalError, match="scratch"):
        marshal(_graph("FROM scratch\n"), "FROM scratch\n")


def _ld(field: int, data: bytes) -> bytes:
    """A length-delimited protobuf field."""
    n, size = len(data), b""
    while True:
        b, n = n & 0x7F, n >> 7
        size += bytes([b | (0x80 if n else 0)])
        if not n:
            return bytes([field << 3 | 2]) + size + data


def test_errdefs_source_becomes_dockerfile_lines() -> None:
    text = "FROM busybox\nRUN echo ok\nRUN false\n"
    source = {"info": {"filename": "Dockerfile", "data": __import__("base64").b64encode(text.encode()).decode(),
                       "language": "Dockerfile"},
              "ranges": [{"start": {"line": 3}, "end": {"line": 3}}]}
    detail = _ld(1, b"github.com/moby/buildkit/errdefs.Source+json") + _ld(2, json.dumps(source).encode())
    status = bytes([0x08, 0x02]) + _ld(2, b"oops") + _ld(3, detail)
    message, details = status_details(status)
    assert message == "oops"
    out = format_solve_error("process \"/bin/sh -c false\" did not complete successfully: exit code: 1", details,
                             step="[3/3] RUN false")
    assert "Dockerfile:3\n" in out and "   3 | >>> RUN false" in out
    assert out.endswith('ERROR: failed to solve: process "/bin/sh -c false" did not complete successfully: '
                        "exit code: 1")


def test_errdefs_vertex_uses_our_locations() -> None:
    text = "FROM busybox\nRUN false\n"
    m = marshal(_graph(text), text)
    run = next(d for d, n in m.names.items() if "RUN false" in n)
    detail = ("github.com/moby/buildkit/errdefs.Vertex+json", json.dumps({"digest": run}).encode())
    out = format_solve_error("exit code: 1", [detail], dockerfile=text, marshalled=m)
    assert "Dockerfile:2\n" in out and ">>> RUN false" in out and " > [2/2] RUN false:" in out


# -- the real check: the Definition built by BuildKit, compared with our own engine's build ----------------------

REAL_CASES = [c for c in CASES if not json.loads((CONFORMANCE / "cases" / c / "expected.json").read_text()).get("fails")
              and "cdi" not in json.dumps(conformance_run.load_case(str(CONFORMANCE / "cases" / c)))]


def _buildkit_missing() -> str:
    if not Path(BUILDCTL).exists():
        return f"no {BUILDCTL} (CI lacks a buildkitd; the remote Solve tests cover it there)"
    proc = subprocess.run([BUILDCTL, "--addr", BUILDKIT_ADDR, "debug", "workers"], capture_output=True, timeout=30)
    return "" if proc.returncode == 0 else f"no buildkitd answering on {BUILDKIT_ADDR}"


@functools.cache
def _host_network_granted() -> bool:
    """Whether the daemon grants network.host (the /tmp/bk oracle does not: it runs its worker with
    --oci-worker-net=host instead, so a RUN there reaches the host's network either way)."""
    text = "FROM localhost:5055/busybox\nRUN true\n"
    res = convert(text, ConvertOptions(), _resolve)
    data = marshal(res.vertex, text, network_host=True).data
    proc = subprocess.run([BUILDCTL, "--addr", BUILDKIT_ADDR, "build", "--allow", "network.host"], input=data,
                          capture_output=True, timeout=120)
    return b"network.host is not allowed" not in proc.stderr


def _tree(tar_path: Path) -> dict[str, tuple[Any, ...]]:
    """Each member of a rootfs tarball: type, mode, owner, link target and content hash (mtimes aside)."""
    out: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar:
            data = tar.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            out[m.name.strip("/").removeprefix("./")] = (m.type, m.mode, m.uid, m.gid, m.linkname,
                                                         hashlib.sha256(data).hexdigest()[:16])
    out.pop("", None)
    out.pop(".", None)  # our tarball names its root; BuildKit's does not
    return out


@pytest.mark.parametrize("case", REAL_CASES)
def test_buildkit_builds_our_definition_like_our_engine(case: str, registry: str, root: Path,
                                                        tmp_path: Path) -> None:
    _build_both(case, root, tmp_path, None)


@pytest.mark.parametrize("case", ["v24-copy-link", "v04-copy-chown-chmod", "v12-mount-cache", "v07-heredoc-run"])
def test_buildkit_builds_our_v08_definition_like_our_engine(case: str, registry: str, root: Path,
                                                            tmp_path: Path) -> None:
    """With only v0.8's caps (merge as copies, no new fields) BuildKit still builds what our engine does."""
    _build_both(case, root, tmp_path, V08_CAPS)


def _build_both(case: str, root: Path, tmp_path: Path, caps: frozenset[str] | None) -> None:
    why = _buildkit_missing()
    if why:
        pytest.skip(why)
    from workbench.image.content import ContentStore
    from workbench.image.resolve import resolve_image
    from workbench.progress.events import EventBus

    case_dir = CONFORMANCE / "cases" / case
    meta = conformance_run.load_case(str(case_dir))
    text = (case_dir / "Dockerfile").read_text()
    context = case_dir / "context"
    if not context.is_dir():
        context = tmp_path / "empty-context"
        context.mkdir()
    content = ContentStore(tmp_path / "content")
    res = convert(text, ConvertOptions(build_args=meta.get("args", {}), target=meta.get("target"),
                                       excludes=tuple(load_dockerignore(context, case_dir / "Dockerfile"))),
                  lambda ref, platform: resolve_image(ref, content, EventBus(), platform))
    host = _host_network_granted()
    data = marshal(res.vertex, text, network_host=host, caps=caps).data
    theirs, ours = tmp_path / "buildkit.tar", tmp_path / "ours.tar"
    secrets = [f"id={sid},src={case_dir / src}" for sid, src in meta.get("secrets", {}).items()]
    proc = subprocess.run([BUILDCTL, "--addr", BUILDKIT_ADDR, "build", *(["--allow", "network.host"] if host else []),
                           *(a for s in secrets for a in ("--secret", s)), *(a for e in meta.get("allow", [])
                                                                             for a in ("--allow", e)),
                           "--local", f"context={context}", "--output", f"type=tar,dest={theirs}",
                           "--progress", "rawjson"], input=data, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    # the daemon re-marshals each op and names its vertices by those digests: they must be ours
    ours_digests = {_digest(b) for b in getattr(pb.Definition.FromString(data), "def")}
    shown = {v["digest"] for line in proc.stderr.decode().splitlines() if line.startswith("{")
             for v in json.loads(line).get("vertexes") or [] if not v.get("name", "").startswith("exporting")}
    assert shown and shown <= ours_digests, shown - ours_digests
    args = [str(context), "-f", str(case_dir / "Dockerfile"), "-o", f"type=tar,dest={ours}"]
    for k, v in meta.get("args", {}).items():
        args += ["--build-arg", f"{k}={v}"]
    if "target" in meta:
        args += ["--target", meta["target"]]
    args += [a for s in secrets for a in ("--secret", s)]
    args += [a for e in meta.get("allow", []) for a in ("--allow", e)]
    wb(*args, root=root)
    a, b = _tree(theirs), _tree(ours)
    diff = [f"{p}: buildkit {a.get(p)} ours {b.get(p)}" for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]
    assert not diff, "\n".join(diff[:30])


def test_buildkit_error_comes_back_as_dockerfile_lines(registry: str, tmp_path: Path) -> None:
    """A failing RUN solved by BuildKit (Control.Solve with our Definition; no local source, so no session):
    its error names the vertex by our digest, which points at the Dockerfile line."""
    why = _buildkit_missing()
    if why:
        pytest.skip(why)
    import uuid

    import grpc

    from workbench.image.content import ContentStore
    from workbench.image.resolve import resolve_image
    from workbench.progress.events import EventBus
    from workbench.remote.marshal_errors import rpc_error_details
    from workbench.remote.proto import control_pb2

    text = "FROM localhost:5055/busybox\nRUN echo before > /x\nRUN exit 3\n"
    content = ContentStore(tmp_path / "content")
    res = convert(text, ConvertOptions(), lambda ref, platform: resolve_image(ref, content, EventBus(), platform))
    host = _host_network_granted()
    m = marshal(res.vertex, text, network_host=host)
    channel = grpc.insecure_channel("unix:" + BUILDKIT_ADDR.removeprefix("unix://"))
    solve = channel.unary_unary("/moby.buildkit.v1.Control/Solve",
                                request_serializer=control_pb2.SolveRequest.SerializeToString,
                                response_deserializer=control_pb2.SolveResponse.FromString)
    # Cache must be set: a v0.20 daemon dereferences it (translateLegacySolveRequest) and panics without it
    request = control_pb2.SolveRequest(Ref=uuid.uuid4().hex, Definition=m.definition,
                                       Entitlements=["network.host"] if host else [],
                                       Cache=control_pb2.CacheOptions())
    with pytest.raises(grpc.RpcError) as e:
        solve(request, timeout=120)
    channel.close()
    message, details = rpc_error_details(e.value)
    out = format_solve_error(message, details, dockerfile=text, marshalled=m)
    assert " > [3/3] RUN exit 3:" in out and "Dockerfile:3\n" in out and "   3 | >>> RUN exit 3" in out
    assert out.endswith('ERROR: failed to solve: process "/bin/sh -c exit 3" did not complete successfully: '
                        "exit code: 3")
