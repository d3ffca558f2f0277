"""Step names exactly as BuildKit v0.20 prints them (issue 16, item 12): the `[stage n/N]` count, padding,
ARG/ENV values substituted, heredoc summaries, one vertex for `COPY --link`, and the internal vertices."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import wb

# The Dockerfile of issue 16 and the names BuildKit v0.20 printed for it, sorted.
ISSUE_DOCKERFILE = """FROM localhost:5055/busybox AS base
ARG VERSION=1.2.3
ENV APP=/opt/app
LABEL a=b
WORKDIR $APP
RUN echo $VERSION > v
COPY f.txt .
RUN <<EOF
echo hi
EOF
FROM base
COPY --link --from=base /opt/app/v /v
ADD f.txt /f
EXPOSE 80
USER nobody
RUN --mount=type=cache,target=/c echo ${VERSION:-none} $APP
CMD ["sh"]
"""
ISSUE_NAMES = """\
[base 1/5] FROM localhost:5055/busybox:latest@sha256:…
[base 2/5] WORKDIR /opt/app
[base 3/5] RUN echo 1.2.3 > v
[base 4/5] COPY f.txt .
[base 5/5] RUN <<EOF (echo hi)
[stage-1 1/3] COPY --link --from=base /opt/app/v /v
[stage-1 2/3] ADD f.txt /f
[stage-1 3/3] RUN --mount=type=cache,target=/c echo 1.2.3 /opt/app
[internal] load .dockerignore
[internal] load build context
[internal] load build definition from Dockerfile
[internal] load metadata for localhost:5055/busybox:latest
""".splitlines()


def _vertices(plain: str) -> dict[str, list[str]]:
    """Each vertex of a plain progress output: its name (a FROM's digest as `…`) → its other lines."""
    names: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for line in plain.splitlines():
        m = re.match(r"#(\d+) (.*)$", line)
        if m is None:
            continue
        num, rest = m.groups()
        if num not in names:
            names[num] = re.sub(r"@sha256:[0-9a-f]{64}", "@sha256:…", rest)
            out.setdefault(names[num], [])
        else:
            out[names[num]].append(rest)
    return out


def _build(ctx: Path, dockerfile: str, root: Path, *args: str) -> dict[str, list[str]]:
    (ctx / "Dockerfile").write_text(dockerfile)
    return _vertices(wb(*args, str(ctx), root=root).stderr)


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    (path / "f.txt").write_text("hello\n")
    return path


def test_the_issue_dockerfile_gets_buildkits_names_exactly(registry: str, ctx: Path, root: Path) -> None:
    vertices = _build(ctx, ISSUE_DOCKERFILE, root)
    assert sorted(vertices) == sorted(ISSUE_NAMES)
    # the internal vertices say what they transferred, as BuildKit's do
    assert any(re.fullmatch(r"transferring context: \d+(\.\d\d[kMG])?B done", s)
               for s in vertices["[internal] load build context"])
    assert any(s.startswith("transferring context:") and s.endswith(" done")
               for s in vertices["[internal] load .dockerignore"])
    assert any(re.fullmatch(r"transferring dockerfile: \d+B done", s)
               for s in vertices["[internal] load build definition from Dockerfile"])


def test_numbers_are_padded_from_ten_steps_and_a_single_stage_has_no_prefix(
        registry: str, ctx: Path, root: Path) -> None:
    runs = "".join(f"RUN echo {i}\n" for i in range(2, 10))
    names = sorted(n for n in _build(ctx, f"FROM localhost:5055/busybox AS only\nENV A=1\n{runs}COPY f.txt /\n",
                                     root) if not n.startswith("[internal]"))
    assert names == ["[ 1/10] FROM localhost:5055/busybox:latest@sha256:…",
                     *(f"[ {i}/10] RUN echo {i}" for i in range(2, 10)), "[10/10] COPY f.txt /"]


def test_a_run_mount_gives_a_single_stage_its_stage_prefix(registry: str, ctx: Path, root: Path) -> None:
    # BuildKit adds a source state for each RUN --mount (scratch when it has no `from`): two states, so the
    # stage is named in its steps
    names = _build(ctx, "FROM localhost:5055/busybox\nRUN --mount=type=tmpfs,target=/t true\n", root)
    assert "[stage-0 2/2] RUN --mount=type=tmpfs,target=/t true" in names


def test_substitution_follows_buildkit_per_instruction(registry: str, ctx: Path, root: Path) -> None:
    dockerfile = ("FROM localhost:5055/busybox\n"
                  "ARG V=7\n"
                  "ENV D=/srv\n"
                  'COPY "f.txt" $D/\n'                       # COPY: quotes removed, values substituted
                  'RUN echo "$V" $UNSET \\\n'                # RUN: quotes and unset variables kept as written
                  "    done\n"
                  "RUN --mount=type=secret,id=tok,env=TOK echo $TOK\n"  # a secret's variable is masked
                  "WORKDIR ${D}/app\n")
    names = set(_build(ctx, dockerfile, root))  # (the mount makes the stage `stage-0`, as above)
    assert {"[stage-0 2/5] COPY f.txt /srv/", '[stage-0 3/5] RUN echo "7" $UNSET     done',
            "[stage-0 4/5] RUN --mount=type=secret,id=tok,env=TOK echo ****",
            "[stage-0 5/5] WORKDIR /srv/app"} <= names


def test_a_changed_build_arg_is_told_as_such_though_the_name_shows_its_value(
        registry: str, ctx: Path, root: Path) -> None:
    dockerfile = "FROM localhost:5055/busybox\nARG V=1\nRUN echo $V > /v\n"
    assert "[2/2] RUN echo 1 > /v" in _build(ctx, dockerfile, root)
    second = _build(ctx, dockerfile, root, "--build-arg", "V=2")
    lines = second["[2/2] RUN echo 2 > /v"]
    assert "CACHE MISS: build arg V changed: '1' → '2'" in lines
    assert not any("instruction changed" in line for line in lines)


# -- names in the LLB definition and the order of the internal vertices, read from `--progress rawjson` -----

def _rawjson_names(ctx: Path, dockerfile: str, root: Path, *args: str) -> list[str]:
    """Every vertex name of a build's rawjson stream, each once, in the order first seen (digests as `…`)."""
    (ctx / "Dockerfile").write_text(dockerfile)
    proc = wb("--progress", "rawjson", *args, str(ctx), root=root, check=False)
    names: list[str] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("{"):
            continue
        for vertex in json.loads(line).get("vertexes") or []:
            name = re.sub(r"@sha256:[0-9a-f]{64}", "@sha256:…", vertex["name"])
            if name not in names:
                names.append(name)
    return names


FROM_BUSYBOX = "FROM localhost:5055/busybox:latest@sha256:…"


def test_a_base_shared_by_stages_is_named_by_the_stage_buildkit_marshals_last(
        registry: str, ctx: Path, root: Path) -> None:
    # the report's example: one FROM vertex, named after `b` (BuildKit's `[b 1/2] FROM …`)
    names = _rawjson_names(ctx, "FROM localhost:5055/busybox AS a\nRUN echo a > /a\n"
                                "FROM localhost:5055/busybox AS b\nRUN echo b > /b\n"
                                "FROM localhost:5055/busybox\nCOPY --from=a /a /\nCOPY --from=b /b /\n", root)
    assert sorted(n for n in names if not n.startswith("[internal]")) == [
        "[a 2/2] RUN echo a > /a", f"[b 1/2] {FROM_BUSYBOX}", "[b 2/2] RUN echo b > /b",
        "[stage-2 2/3] COPY --from=a /a /", "[stage-2 3/3] COPY --from=b /b /"]


@pytest.mark.parametrize(("case", "expected"), [
    ("v05-multistage", f"[other 1/2] {FROM_BUSYBOX}"),  # the copies' sources in order: build, other, build
    ("v13-mount-bind", f"[data 1/2] {FROM_BUSYBOX}"),   # an exec's mounts in target order: / then /mnt
])
def test_the_conformance_cases_name_their_shared_base_as_buildkit(
        registry: str, root: Path, tmp_path: Path, case: str, expected: str) -> None:
    ctx = tmp_path / case
    shutil.copytree(Path(__file__).parent / "conformance" / "cases" / case, ctx)
    context = ctx / "context"
    if context.is_dir():  # the case's build context, next to its Dockerfile
        for item in context.iterdir():
            shutil.move(str(item), ctx / item.name)
    names = _rawjson_names(ctx, (ctx / "Dockerfile").read_text(), root)
    assert [n for n in names if "FROM " in n] == [expected]


def test_a_dockerfile_that_does_not_parse_resolves_no_base(registry: str, ctx: Path, root: Path) -> None:
    # BuildKit parses every instruction, of every stage, before it looks a base image up
    assert _rawjson_names(ctx, "FROM localhost:5055/busybox\nWRONG x\n", root) == [
        "[internal] load build definition from Dockerfile"]
    assert _rawjson_names(ctx, "FROM localhost:5055/busybox AS x\nFOO\nFROM localhost:5055/busybox\nRUN true\n",
                          root) == ["[internal] load build definition from Dockerfile"]
    # an instruction missing its argument is a parse error too (BuildKit's instructions.Parse)
    for wrong in ("HEALTHCHECK", "USER", "EXPOSE"):
        assert _rawjson_names(ctx, f"FROM localhost:5055/busybox\nRUN true\n{wrong}\n", root) == [
            "[internal] load build definition from Dockerfile"], wrong


def test_a_conversion_error_comes_after_the_dockerignore_is_loaded(registry: str, ctx: Path, root: Path) -> None:
    # the base resolves, .dockerignore loads, then the ENV fails to expand (BuildKit's order)
    assert _rawjson_names(ctx, "FROM localhost:5055/busybox\nENV a='a\\'b'\n", root) == [
        "[internal] load build definition from Dockerfile",
        "[internal] load metadata for localhost:5055/busybox:latest",
        "[internal] load .dockerignore"]
    # a base that does not resolve stops the build before it
    assert _rawjson_names(ctx, "FROM localhost:5055/nosuch-image\nRUN true\n", root) == [
        "[internal] load build definition from Dockerfile",
        "[internal] load metadata for localhost:5055/nosuch-image:latest"]


def test_a_failed_build_announces_every_step_first_and_prints_only_those_that_ran(
        registry: str, ctx: Path, root: Path) -> None:
    # BuildKit announces a solve's whole graph before it runs anything (a vertex with no `started`), so the
    # steps a failure stopped early are still named in rawjson; the plain printer shows only what ran
    dockerfile = ("FROM localhost:5055/busybox\nRUN echo one > /one\nCOPY missing.txt /m\n"
                  "RUN echo after > /after\n")
    (ctx / "Dockerfile").write_text(dockerfile)
    proc = wb("--progress", "rawjson", str(ctx), root=root, check=False)
    assert proc.returncode != 0
    first: dict[str, dict[str, object]] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("{"):
            for vertex in json.loads(line).get("vertexes") or []:
                first.setdefault(re.sub(r"@sha256:[0-9a-f]{64}", "@sha256:…", vertex["name"]), vertex)
    steps = {n: v for n, v in first.items() if not n.startswith("[internal]")}
    assert sorted(steps) == [f"[1/4] {FROM_BUSYBOX}", "[2/4] RUN echo one > /one", "[3/4] COPY missing.txt /m",
                             "[4/4] RUN echo after > /after"]
    assert not any("started" in v for v in steps.values())  # the announcement comes before any step starts
    assert steps["[4/4] RUN echo after > /after"]["inputs"] == [steps["[3/4] COPY missing.txt /m"]["digest"]]
    plain = _vertices(wb(str(ctx), root=root, check=False).stderr)
    assert "[3/4] COPY missing.txt /m" in plain
    assert "[4/4] RUN echo after > /after" not in plain


@pytest.mark.parametrize("source", ["http://127.0.0.1:9/tool.tar", "http://127.0.0.1:9/repo.git#main"])
def test_a_remote_add_source_is_fetched_in_a_vertex_named_after_its_step(
        registry: str, ctx: Path, root: Path, source: str) -> None:
    # BuildKit names the HTTP / git source after the ADD step, so an unreachable source fails "at" the ADD
    (ctx / "Dockerfile").write_text(f"FROM localhost:5055/busybox\nADD {source} /x\n")
    proc = wb("--progress", "rawjson", str(ctx), root=root, check=False)
    assert proc.returncode != 0
    failed = [v for line in proc.stderr.splitlines() if line.startswith("{")
              for v in json.loads(line).get("vertexes") or [] if v.get("error")]
    assert [v["name"] for v in failed] == [f"[2/2] ADD {source} /x"]
    assert failed[0]["error"].startswith("failed to load cache key: ")
    assert not any("[internal] load remote" in line or "[internal] load git" in line
                   for line in proc.stderr.splitlines())
