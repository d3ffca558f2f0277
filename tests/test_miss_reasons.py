"""Why every miss missed: each kind of change names itself, in plain progress and in `inspect why`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, step_outcomes, wb


def reasons(stderr: str) -> dict[str, str]:
    """step name → miss reason ('' when cached) from plain progress output."""
    return {name: "" if got == "CACHED" else got for name, got in step_outcomes(stderr).items()}


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    (c / "src").mkdir(parents=True)
    (c / "src" / "app.py").write_text("print(1)\n")
    (c / "src" / "util.py").write_text("u = 1\n")
    (c / "README").write_text("readme\n")
    return c


DOCKERFILE = """FROM localhost:5055/busybox
ARG GREETING=hello
COPY src/ /src/
RUN echo $GREETING > /greeting && ls /src > /listing
COPY README /README
"""


def build(ctx: Path, *args: str) -> dict[str, str]:
    (ctx / "Dockerfile").exists() or (ctx / "Dockerfile").write_text(DOCKERFILE)
    return reasons(wb(str(ctx), *args, root=ctx.parent / "root").stderr)


def test_file_changes_name_the_files(registry: str, ctx: Path) -> None:
    first = build(ctx)
    assert first["[2/4] COPY src/ /src/"] == "never built before"
    assert set(build(ctx).values()) == {""}
    (ctx / "src" / "app.py").touch()
    assert set(build(ctx).values()) == {""}  # a touch is not a change
    (ctx / "src" / "app.py").write_text("print(2)\n")
    r = build(ctx)
    assert re.fullmatch(r"src/app.py changed \([0-9a-f]{12} → [0-9a-f]{12}\)", r["[2/4] COPY src/ /src/"])
    assert r["[3/4] RUN echo hello > /greeting && ls /src > /listing"] == \
        "parent step missed: [2/4] COPY src/ /src/"
    assert r["[4/4] COPY README /README"] == "parent step missed: [3/4] RUN echo hello > /greeting && " \
                                             "ls /src > /listing"
    (ctx / "src" / "new.py").write_text("n\n")
    (ctx / "src" / "util.py").unlink()
    assert build(ctx)["[2/4] COPY src/ /src/"] == "src/new.py added; src/util.py removed"
    (ctx / "unrelated.txt").write_text("x\n")  # a file no step reads
    assert set(build(ctx).values()) == {""}


def test_build_arg_and_instruction_and_no_cache(registry: str, ctx: Path) -> None:
    build(ctx)
    r = build(ctx, "--build-arg", "GREETING=bonjour")
    assert r["[3/4] RUN echo bonjour > /greeting && ls /src > /listing"] == \
        "build arg GREETING changed: 'hello' → 'bonjour'"
    assert r["[2/4] COPY src/ /src/"] == ""
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("ls /src", "ls -a /src"))
    r = build(ctx, "--build-arg", "GREETING=bonjour")
    assert r["[3/4] RUN echo bonjour > /greeting && ls -a /src > /listing"] == (
        "instruction changed: RUN echo $GREETING > /greeting && ls /src > /listing → "
        "RUN echo $GREETING > /greeting && ls -a /src > /listing")
    r = build(ctx, "--no-cache", "--build-arg", "GREETING=bonjour")
    from_step = next(k for k in r if " FROM " in f" {k}")
    assert r.pop(from_step) == ""  # as BuildKit's frontend: --no-cache re-runs RUN, COPY and ADD, not FROM
    assert set(r.values()) == {"cache disabled (--no-cache)"} and len(r) == 3


def _push(src: str, dest: str, *flags: str) -> None:
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", *flags, src, f"docker://127.0.0.1:5055/{dest}"],
                   check=True, capture_output=True, timeout=120)


def test_base_image_change_names_the_image(registry: str, ctx: Path, tmp_path: Path) -> None:
    _push("docker://127.0.0.1:5055/busybox:latest", "moving:latest", "--src-tls-verify=false")
    (ctx / "Dockerfile").write_text("FROM localhost:5055/moving\nRUN echo hi > /hi\n")
    first = build(ctx)
    assert first["[2/2] RUN echo hi > /hi"] == "never built before"
    # move the tag to another image: busybox plus one layer
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo v2 > /v2\n")
    wb(str(other), "-o", f"type=oci,dest={tmp_path / 'v2.tar'}", root=tmp_path / "root2")
    _push(f"oci-archive:{tmp_path / 'v2.tar'}", "moving:latest")
    r = build(ctx)
    base = next(k for k in r if k.startswith("[1/2] FROM localhost:5055/moving"))
    assert re.fullmatch(r"base image localhost:5055/moving:latest changed: [0-9a-f]{12} → [0-9a-f]{12}", r[base])
    assert r["[2/2] RUN echo hi > /hi"] == f"parent step missed: {base}"


def test_inspect_why_explains_the_last_build(registry: str, ctx: Path) -> None:
    build(ctx)
    (ctx / "README").write_text("new readme\n")
    build(ctx)
    proc = subprocess.run(WORKBENCH + ["inspect", "why", str(ctx), "--root", str(ctx.parent / "root")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "4 missed the cache" not in out and "1 missed the cache" in out
    assert "[2/4] COPY src/ /src/\n    CACHED" in out
    assert re.search(r"\[4/4\] COPY README /README\n    CACHE MISS: README changed \(", out)
    proc = subprocess.run(WORKBENCH + ["inspect", "why", str(ctx.parent), "--root", str(ctx.parent / "root")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no build of" in proc.stderr


def test_same_size_same_mtime_edit_is_still_seen(registry: str, ctx: Path) -> None:
    """Context digests are reused across processes by inode/size/mtime/ctime: an edit that keeps size and
    mtime still changes ctime, so it is rehashed and seen."""
    build(ctx)
    assert (ctx.parent / "root" / "context-hashes").is_file()
    app = ctx / "src" / "app.py"
    st = app.stat()
    app.write_text("print(9)\n")  # same size
    os.utime(app, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert build(ctx)["[2/4] COPY src/ /src/"].startswith("src/app.py changed")


@pytest.mark.parametrize(("dockerfile", "expected"), [
    # a WORKDIR after a RUN runs again with it; the one before stays cached, as BuildKit shows them
    ("FROM localhost:5055/busybox\nWORKDIR /w\nRUN date > /d\nWORKDIR /v\n",
     {"[1/4] FROM": "", "[2/4] WORKDIR /w": "", "[3/4] RUN date > /d": "cache disabled (--no-cache)",
      "[4/4] WORKDIR /v": "parent step ran again (--no-cache): [3/4] RUN date > /d"}),
    # a stage's WORKDIR after its RUN, copied from: all of them run again
    ("FROM localhost:5055/busybox AS b\nRUN date > /d\nWORKDIR /x\nFROM localhost:5055/busybox\n"
     "COPY --from=b /d /d\n",
     {"[b 2/3] RUN date > /d": "cache disabled (--no-cache)",
      "[b 3/3] WORKDIR /x": "parent step ran again (--no-cache): [b 2/3] RUN date > /d",
      "[stage-1 2/2] COPY --from=b /d /d": "cache disabled (--no-cache)"}),
    # a COPY --link last: the merge that ends the build runs again too
    ("FROM localhost:5055/busybox\nRUN date > /d\nCOPY --link README /r\n",
     {"[2/3] RUN date > /d": "cache disabled (--no-cache)",
      "[3/3] COPY --link README /r": "cache disabled (--no-cache)"}),
])
def test_no_cache_reruns_what_depends_on_a_rerun_step(registry: str, ctx: Path, dockerfile: str,
                                                      expected: dict[str, str]) -> None:
    (ctx / "Dockerfile").write_text(dockerfile)
    build(ctx)
    got = build(ctx, "--no-cache")
    for name, reason in expected.items():
        found = [got[k] for k in got if k.startswith(name)]
        assert found == [reason], (name, got)


def test_no_cache_filter_reruns_the_named_stages_steps_only(registry: str, ctx: Path) -> None:
    """buildx's --no-cache-filter: the RUN, COPY and ADD steps of the named stages (any case, repeated or with
    commas) ignore the cache, and what depends on them runs again; other stages stay cached."""
    (ctx / "Dockerfile").write_text(
        "FROM localhost:5055/busybox AS a\nRUN date > /a\nWORKDIR /x\n"
        "FROM localhost:5055/busybox AS b\nRUN date > /b\n"
        "FROM localhost:5055/busybox AS c\nCOPY README /c\n"
        "FROM localhost:5055/busybox\nCOPY --from=b /b /b\nCOPY --from=a /a /a\n")
    build(ctx)
    got = build(ctx, "--no-cache-filter", "A", "--no-cache-filter", "c,nonexistent")
    assert got["[a 2/3] RUN date > /a"] == "cache disabled for its stage (--no-cache-filter)"
    assert got["[a 3/3] WORKDIR /x"] == "parent step ran again (--no-cache-filter): [a 2/3] RUN date > /a"
    assert got["[b 2/2] RUN date > /b"] == ""
    assert got["[stage-3 2/3] COPY --from=b /b /b"] == ""
    assert got["[stage-3 3/3] COPY --from=a /a /a"] == \
        "parent step ran again (--no-cache-filter): [a 2/3] RUN date > /a"
    assert not any(k.startswith("[c ") for k in got)  # not in the target's graph: nothing to run
    assert set(build(ctx).values()) == {""}  # the reruns' results are the cache again


def test_every_command_that_builds_takes_the_no_cache_filter(tmp_path: Path) -> None:
    """`workbench build`, `debug` and the DAP server's launch `args` hand the stages on to the build request."""
    import argparse

    from workbench.build_options import add_build_arguments, no_cache_filter
    from workbench.dap.launch import parse_launch

    p = argparse.ArgumentParser()
    add_build_arguments(p, no_cache=True)
    args = p.parse_args(["--no-cache-filter", "a, b", "--no-cache-filter", "C", "."])
    assert no_cache_filter(args) == ("a", "b", "C")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    launch = parse_launch({"dockerfile": str(tmp_path / "Dockerfile"), "args": ["--no-cache-filter", "x,y"]}, tmp_path)
    assert launch.request(None).no_cache_filter == ("x", "y")
