"""Dockerfile → LLB conversion: the ops each instruction and flag becomes, and the errors bad input gets.

The image resolver here returns a fixed config so no registry is needed; the real builds of the same
features are in tests/test_frontend_build.py and the conformance cases.
"""

from __future__ import annotations

from typing import Any

import pytest

from workbench.frontend.dockerfile.convert import ConvertOptions, ConvertResult, DockerfileError, convert
from workbench.llb.ops import (
    Copy,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    LocalSource,
    MergeOp,
    Mkfile,
    Vertex,
)

BASE = "FROM localhost:5055/busybox\n"


def _resolver(configs: dict[str, dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
        config = (configs or {}).get(ref, {"config": {"Env": ["PATH=/bin"]}})
        return ref, "sha256:" + "0" * 64, config

    return resolve


def conv(text: str, configs: dict[str, dict[str, Any]] | None = None, **opts: Any) -> ConvertResult:
    return convert(text, ConvertOptions(**opts), _resolver(configs))


def error(text: str, **opts: Any) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        conv(text, **opts)
    return info.value


def execs(v: Vertex) -> list[ExecOp]:
    return [x.op for x in v.walk() if isinstance(x.op, ExecOp)]


# -- RUN --------------------------------------------------------------------------------------------

def test_run_mount_types_and_defaults() -> None:
    res = conv(BASE + "WORKDIR /w\n"
               "RUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=t,size=64m "
               "--mount=type=secret,id=tok --mount=type=secret,id=k,env=KEY --mount=type=ssh "
               "--mount=source=f.txt,target=/f true\n")
    op = execs(res.vertex)[0]
    by_target = {m.target or m.env: m for m in op.mounts}
    cache = by_target["/root/.cache"]
    assert (cache.type, cache.id, cache.sharing, cache.readonly, cache.input) == ("cache", "/root/.cache", "shared",
                                                                                    False, -1)
    tmpfs = by_target["/w/t"]
    assert (tmpfs.type, tmpfs.size) == ("tmpfs", 64 << 20)
    secret = by_target["/run/secrets/tok"]
    assert (secret.type, secret.id, secret.readonly, secret.required) == ("secret", "tok", False, False)
    assert by_target["KEY"].target == "" and by_target["KEY"].id == "k"
    ssh = by_target["/run/buildkit/ssh_agent.0"]
    assert (ssh.type, ssh.id) == ("ssh", "default")
    bind = by_target["/f"]
    assert (bind.type, bind.source, bind.readonly) == ("bind", "/f.txt", True)
    run_vertex = res.vertex
    assert isinstance(run_vertex.inputs[bind.input].op, LocalSource)


def test_run_mount_from_stage_and_cache_options() -> None:
    res = conv("FROM localhost:5055/busybox AS data\nRUN echo > /d\n" + BASE +
               "RUN --mount=type=bind,from=data,source=/d,target=/mnt,rw "
               "--mount=type=cache,id=c1,target=/c,sharing=locked,mode=0700,uid=1000,gid=1000 true\n")
    op = res.vertex.op
    assert isinstance(op, ExecOp)
    bind, cache = op.mounts
    assert bind.readonly is False and bind.source == "/d"
    assert execs(res.vertex.inputs[bind.input])[0].args[-1] == "echo > /d"
    assert (cache.id, cache.sharing, cache.mode, cache.uid, cache.gid) == ("c1", "locked", 0o700, 1000, 1000)


def test_mount_values_are_expanded_but_from_is_not() -> None:
    res = conv(BASE + "ARG DIR=/cache\nRUN --mount=type=cache,target=$DIR true\n")
    assert execs(res.vertex)[0].mounts[0].target == "/cache"
    err = error(BASE + "ARG S=x\nRUN --mount=from=$S,target=/m true\n")
    assert "'from' doesn't support variable expansion, define alias stage instead" in err.message


@pytest.mark.parametrize(("flag", "message"), [
    ("type=foo,target=/x", 'unsupported mount type "foo"'),
    ("type=bnid,target=/x", 'unsupported mount type "bnid" (did you mean bind?)'),
    ("target=/x,color=red", "unexpected key 'color' in 'color=red'"),
    ("target=/x,tagret=/y", "unexpected key 'tagret' in 'tagret=/y' (did you mean target?)"),
    ("type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
    ("type=cache,target=/x,sharing=all", 'unsupported sharing value "all"'),
    ("type=cache,target=/x,mode=999", "invalid value 999 for mode"),
    ("type=cache,target=/x,uid=me", "invalid value me for uid"),
    ("type=bind,target=/x,mode=0600", 'mode not allowed for "bind" type mounts'),
    ("type=bind,target=/x,size=10", "unexpected key 'size' for mount type 'bind'"),
    ("type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
    ("type=bind,target=/x,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=secret,from=x,id=a", "secret mount should not have a from"),
    ("type=secret", "invalid secret mount. one of source, target required"),
    ("type=secret,id=a,source=b", "both source and id can't be set"),
    ("type=bind,target=/", 'invalid mount target "/"'),
    ("type=bind,target=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
])
def test_bad_mount_options(flag: str, message: str) -> None:
    err = error(BASE + f"RUN --mount={flag} true\n")
    assert err.message == message
    assert err.start_line == 2


def test_run_network_security_device_flags() -> None:
    res = conv(BASE + "RUN --network=none --security=insecure --device=vendor.com/gpu=all,required true\n")
    op = execs(res.vertex)[0]
    assert (op.network, op.security) == ("none", "insecure")
    assert [(d.name, d.required) for d in op.devices] == [("vendor.com/gpu=all", True)]
    assert "unsupported network mode" in error(BASE + "RUN --network=bridge true\n").message


def test_run_heredocs_as_buildkit_passes_them() -> None:
    res = conv(BASE + "RUN <<EOF\necho one\necho two\nEOF\n"
               "RUN <<EOF\n#!/bin/sh\necho hi\nEOF\n"
               "RUN cat <<A > /a && cat <<B > /b\nfirst\nA\nsecond\nB\n")
    plain, shebang, multi = execs(res.vertex)
    assert plain.args == ("/bin/sh", "-c", "echo one\necho two\n")
    assert shebang.args == ("/dev/pipes/EOF",)
    pipes = shebang.mounts[0]
    assert (pipes.type, pipes.target, pipes.readonly) == ("bind", "/dev/pipes", True)
    assert multi.args == ("/bin/sh", "-c", "cat <<A > /a && cat <<B > /b\nfirst\nA\nsecond\nB")


def test_arg_redeclared_without_value_keeps_earlier_value() -> None:
    res = conv(BASE + "ARG V=hello\nARG V\nRUN echo $V\n")
    assert "V=hello" in execs(res.vertex)[0].env


def test_onbuild_triggers_run_in_child_and_are_cleared() -> None:
    res = conv("FROM localhost:5055/busybox AS base\nONBUILD RUN echo triggered\nRUN echo base\n"
               "FROM base\nRUN echo child\n")
    assert [e.args[-1] for e in execs(res.vertex)] == ["echo base", "echo triggered", "echo child"]
    assert "OnBuild" not in res.image["config"]
    # an image's triggers run too
    image = {"config": {"Env": ["PATH=/bin"], "OnBuild": ["RUN echo from-image"]}}
    res = conv("FROM img\nRUN echo mine\n", {"img": image})
    assert [e.args[-1] for e in execs(res.vertex)] == ["echo from-image", "echo mine"]


def test_onbuild_forbidden_triggers() -> None:
    image = {"config": {"OnBuild": ["FROM other"]}}
    with pytest.raises(DockerfileError, match="FROM isn't allowed as an ONBUILD trigger"):
        conv("FROM img\nRUN true\n", {"img": image})


# -- COPY / ADD -------------------------------------------------------------------------------------

def _copies(res: ConvertResult) -> list[tuple[Copy, Vertex]]:
    out = []
    for v in res.vertex.walk():
        if isinstance(v.op, FileOp):
            out += [(a, v.inputs[a.src_input]) for a in v.op.actions if isinstance(a, Copy)]
    return out


def test_copy_heredocs_expand_unless_quoted() -> None:
    res = conv(BASE + 'ARG NAME=world\nCOPY <<EOF /greeting\nhello "$NAME"\nEOF\nCOPY <<"EOF" /lit\n$NAME\nEOF\n')
    datas = {}
    for action, src in _copies(res):
        mk = src.op.actions[0]  # type: ignore[union-attr]
        assert isinstance(mk, Mkfile)
        datas[action.dest] = mk.data
    assert datas == {"/greeting": b'hello "world"\n', "/lit": b"$NAME\n"}


def test_copy_flags_become_copy_fields() -> None:
    res = conv(BASE + "COPY --chmod=u+x,g-w --exclude=*.md --exclude=tmp --parents ./a/./b/*.go /dst/\n")
    (action, src), = _copies(res)
    assert (action.mode, action.mode_str) == (None, "u+x,g-w")
    assert action.exclude_patterns == ("*.md", "tmp")
    assert action.parents and action.src == "./a/./b/*.go" and action.dest == "/dst/"
    assert isinstance(src.op, LocalSource)
    (action, _), = _copies(conv(BASE + "COPY --chmod=0755 a /a\n"))
    assert (action.mode, action.mode_str) == (0o755, "")
    assert error(BASE + "COPY --chmod=u+q a /a\n").message == "invalid chmod parameter 'u+q': invalid syntax"
    (action, _), = _copies(conv(BASE + "COPY --chmod=go=u-w a /a\n"))
    assert action.mode_str == "go=u-w"


def test_copy_link_is_a_layer_merged_on_the_base() -> None:
    res = conv(BASE + "RUN echo > /x\nCOPY --link a /a\n")
    assert isinstance(res.vertex.op, MergeOp)
    base, layer = res.vertex.inputs
    assert isinstance(base.op, ExecOp)
    assert isinstance(layer.op, FileOp) and layer.inputs[0].op.__class__.__name__ == "ScratchSource"


def test_add_sources() -> None:
    res = conv(BASE + "ADD --checksum=sha256:" + "a" * 64 + " https://example.com/files/tool.tgz /opt/\n"
               "ADD --keep-git-dir https://example.com/repo.git#v1.0:sub /src\n"
               "ADD git@example.com:org/repo.git /repo\n"
               "ADD archive.tar.gz /x/\n")
    kinds = {}
    for action, src in _copies(res):
        kinds[action.dest] = (src.op, action)
    http, http_copy = kinds["/opt/"]
    assert isinstance(http, HttpSource) and http.filename == "tool.tgz" and http.checksum == "sha256:" + "a" * 64
    assert http_copy.src == "/tool.tgz" and not http_copy.attempt_unpack
    git, _ = kinds["/src"]
    assert git == GitSource("https://example.com/repo.git", "v1.0", "sub", True)
    scp, _ = kinds["/repo"]
    assert isinstance(scp, GitSource) and scp.remote == "git@example.com:org/repo.git" and not scp.keep_git_dir
    local, local_copy = kinds["/x/"]
    assert isinstance(local, LocalSource) and local_copy.attempt_unpack
    # COPY never unpacks
    (action, _), = _copies(conv(BASE + "COPY archive.tar.gz /x/\n"))
    assert not action.attempt_unpack


@pytest.mark.parametrize(("text", "message"), [
    (BASE + "ADD --checksum=sha256:" + "a" * 64 + " a.txt /a\n", "checksum can't be specified for non-HTTP(S) sources"),
    (BASE + "ADD --checksum=md5:x https://e.com/a /a\n", "invalid checksum digest format: md5:x"),
    (BASE + "COPY --checksum=sha256:x a /a\n", "dockerfile parse error on line 2: unknown flag: --checksum"),
    (BASE + "COPY --form=x a /a\n", "dockerfile parse error on line 2: unknown flag: --form (did you mean from?)"),
    (BASE + "ADD --from=x a /a\n", "dockerfile parse error on line 2: unknown flag: --from"),
    (BASE + "RUN --mout=type=cache true\n",
     "dockerfile parse error on line 2: unknown flag: --mout (did you mean mount?)"),
    (BASE + "COPY a\n", "dockerfile parse error on line 2: COPY requires at least two arguments, but only one was "
                        "provided. Destination could not be determined."),
    (BASE + "COPY --link=perhaps a /a\n", "dockerfile parse error on line 2: expecting boolean value for flag link, "
                                         "not: perhaps"),
    (BASE + "RUNN true\n", "dockerfile parse error on line 2: unknown instruction: RUNN (did you mean RUN?)"),
    ("FROM a AS b c\n", "dockerfile parse error on line 1: FROM requires either one or three arguments"),
])
def test_instruction_errors(text: str, message: str) -> None:
    err = error(text)
    assert err.message == message
    assert err.start_line == text.count("\n")


def test_undefined_and_later_stages() -> None:
    err = error("FROM localhost:5055/busybox AS a\nCOPY --from=b /x /x\nFROM localhost:5055/busybox AS b\n",
                target="a")
    assert err.message.startswith("COPY --from=b refers to a later stage or itself")
    assert err.start_line == 2
    err = error(BASE + "RUN --mount=from=later,target=/m true\nFROM localhost:5055/busybox AS later\n", target="0")
    assert err.message.startswith("--mount from=later refers to a later stage or itself")
    assert error(BASE, target="nope").message == 'target stage "nope" could not be found'


def test_from_platform_and_automatic_platform_args() -> None:
    seen: list[tuple[str, str]] = []

    def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
        seen.append((ref, platform))
        return ref, "sha256:" + "1" * 64, {"config": {}}

    text = ("FROM --platform=$BUILDPLATFORM img AS build\nARG TARGETARCH\nRUN echo $TARGETARCH\n"
            "FROM --platform=linux/arm64 img\nCOPY --from=build /x /x\n")
    res = convert(text, ConvertOptions(), resolve)
    assert sorted(seen) == [("img", "linux/amd64"), ("img", "linux/arm64")]
    sources = [v.op for v in res.vertex.walk() if isinstance(v.op, ImageSource)]
    assert sorted(s.platform for s in sources) == ["linux/amd64", "linux/arm64"]
    assert "TARGETARCH=amd64" in execs(res.vertex)[0].env
    # not declared in the stage: not in RUN's environment
    res = convert("FROM img\nRUN true\n", ConvertOptions(), resolve)
    assert not any(e.startswith("TARGET") for e in execs(res.vertex)[0].env)
