"""Dockerfile conversion as BuildKit v0.20 converts it (issue 16, items 1-7), built for real and checked in the
exported files, the image config and the build graph. Most builds here use a relative context path (item 7)."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORKBENCH

BASE = "FROM localhost:5055/busybox\n"
# the environment a step's shell was started with, in order (`env` in a shell lists it in hash order)
DUMP_ENV = "tr '\\0' '\\n' < /proc/$$/environ | grep -v '^HOME=' > /env"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    return c


def build(ctx: Path, dockerfile: str, *args: str, output: str = "local",
          check: bool = True) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Build `dockerfile` from the context given by a path relative to the working directory (item 7)."""
    (ctx / "Dockerfile").write_text(dockerfile)
    out = ctx.parent / ("out.tar" if output == "oci" else "out")
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(ctx.parent / "root"), "--progress", "plain",
                                       "-o", f"type={output},dest={out}", *args, ctx.name],
                          cwd=ctx.parent, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return out, proc


def image_config(archive: Path) -> dict[str, Any]:
    """The image config blob of an OCI archive with one image."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> Any:
            f = tar.extractfile("blobs/" + digest.replace(":", "/"))
            assert f is not None
            return json.loads(f.read())

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        return blob(blob(index["manifests"][0]["digest"])["config"]["digest"])  # type: ignore[no-any-return]


def llb(ctx: Path, dockerfile: str) -> list[dict[str, Any]]:
    (ctx / "Dockerfile").write_text(dockerfile)
    proc = subprocess.run(WORKBENCH + ["inspect", "llb", "--root", str(ctx.parent / "root"), ctx.name],
                          cwd=ctx.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_wildcard_matching_nothing_copies_nothing(registry: str, ctx: Path) -> None:
    (ctx / "a.txt").write_text("a\n")
    out, _ = build(ctx, "FROM localhost:5055/busybox AS first\n"
                   "COPY requirements*.txt constraints*.txt /none/\n"
                   "COPY nothing*.txt a.txt /some/\n"
                   "COPY missing-dir*/ /none2/\n"
                   "FROM first\n"
                   "COPY --from=first /some/a*.txt /none3*/x* /from/\n"
                   "COPY --from=first /no-such*.txt /none4/\n")
    assert sorted(p.name for p in (out / "some").iterdir()) == ["a.txt"]
    assert (out / "from" / "a.txt").read_text() == "a\n"
    # no match: nothing copied, and no destination directory made
    for name in ("none", "none2", "none4"):
        assert not (out / name).exists(), name


def test_missing_source_without_wildcard_still_fails(registry: str, ctx: Path) -> None:
    (ctx / "a.txt").write_text("a\n")
    _, proc = build(ctx, BASE + "COPY nothing*.txt a*.txt missing.txt /dest/\n", check=False)
    assert proc.returncode == 1
    assert 'ERROR: failed to solve: failed to compute cache key: "/missing.txt": not found' in proc.stderr
    assert ">>> COPY nothing*.txt a*.txt missing.txt /dest/" in proc.stderr and "Dockerfile:2" in proc.stderr


def test_several_sources_and_a_destination_without_slash(registry: str, ctx: Path) -> None:
    """No error in BuildKit (moby/buildkit#1853): `.` names the working directory, a path is written by each
    source in turn, so the last one wins."""
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    out, _ = build(ctx, BASE + "WORKDIR /foo\nCOPY a.txt b.txt .\nCOPY a.txt b.txt /dest\nCOPY *.txt /globbed\n")
    assert sorted(p.name for p in (out / "foo").iterdir()) == ["a.txt", "b.txt"]
    assert (out / "dest").read_text() == "b\n" and (out / "globbed").read_text() == "b\n"


def test_bind_mount_without_target_mounts_at_the_working_directory(registry: str, ctx: Path) -> None:
    (ctx / "in-context.txt").write_text("from the context\n")
    out, _ = build(ctx, "FROM localhost:5055/busybox AS base\nRUN mkdir /m && echo staged > /m/f\n"
                   "FROM localhost:5055/busybox\nWORKDIR /src\n"
                   "RUN --mount=type=bind cat in-context.txt > /seen-bind\n"
                   "WORKDIR /other\n"
                   "RUN --mount=from=base,source=/m cat /other/f > /seen-from\n"
                   # a cache id is the target as written: both steps share cache `c`
                   "WORKDIR /a\nRUN --mount=type=cache,target=c echo cached > c/f\n"
                   "WORKDIR /b\nRUN --mount=type=cache,target=c cat c/f > /seen-cache\n")
    assert (out / "seen-bind").read_text() == "from the context\n"
    assert (out / "seen-from").read_text() == "staged\n"
    assert (out / "seen-cache").read_text() == "cached\n"
    assert not (out / "src" / "in-context.txt").exists() and not (out / "other" / "f").exists()
    # no WORKDIR: the working directory is /, where nothing can be mounted
    _, proc = build(ctx, BASE + "RUN --mount=type=bind true\n", check=False)
    assert proc.returncode == 1 and 'invalid mount target "/"' in proc.stderr and "Dockerfile:2" in proc.stderr


def test_env_values_expand_against_the_env_before_the_instruction(registry: str, ctx: Path) -> None:
    out, _ = build(ctx, BASE + "ENV A=1 B=${A}x\nENV A=2 C=${A}y\nENV K=key\nENV ${K}2=v\n"
                   "RUN echo \"$B $C $key2\" > /seen\n", output="oci")
    env = image_config(out)["config"]["Env"]
    assert env == [PATH_ENV, "A=2", "B=x", "C=1y", "K=key", "key2=v"]
    out, _ = build(ctx, BASE + "ENV A=1 B=${A}x\nENV A=2 C=${A}y\nRUN echo \"$B $C\" > /seen\n")
    assert (out / "seen").read_text() == "x 1y\n"


def test_arg_after_env_and_the_order_of_a_steps_environment(registry: str, ctx: Path) -> None:
    dockerfile = (BASE + "ENV A=2 B=1\nARG A=3\nENV C=1\nENV B=2\n"
                  f"RUN echo $A > /a && {DUMP_ENV}\n")
    out, _ = build(ctx, dockerfile)
    # BuildKit's env list: a key set again (ARG A, ENV B) moves to the end; the ARG's value wins in the step
    assert (out / "env").read_text().splitlines() == [PATH_ENV, "A=3", "C=1", "B=2"]
    assert (out / "a").read_text() == "3\n"
    out, _ = build(ctx, dockerfile, output="oci")
    assert image_config(out)["config"]["Env"] == [PATH_ENV, "A=2", "B=2", "C=1"]  # replaced in place, no ARG


def test_a_stage_keeps_its_base_stages_args_before_the_image_env(registry: str, ctx: Path) -> None:
    out, _ = build(ctx, "FROM localhost:5055/busybox AS base\nENV E=1\nARG A=2\nENV F=1\n"
                   f"FROM base\nRUN {DUMP_ENV}\n")
    # the child starts from the base's state (ARG A included), then sets the image's env again
    assert (out / "env").read_text().splitlines() == ["A=2", PATH_ENV, "E=1", "F=1"]


def test_sbom_scan_args_stay_out_of_a_steps_environment(registry: str, ctx: Path) -> None:
    out, _ = build(ctx, BASE + "ARG BUILDKIT_SBOM_SCAN_STAGE=true\nARG BUILDKIT_SBOM_SCAN_CONTEXT\n"
                   "ARG BUILDKIT_INLINE_CACHE=1\nARG OTHER\n"
                   f"RUN echo \"[$BUILDKIT_SBOM_SCAN_STAGE]\" > /seen && {DUMP_ENV}\n",
                   "--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=true", "--build-arg", "OTHER=x")
    assert (out / "env").read_text().splitlines() == [PATH_ENV, "BUILDKIT_INLINE_CACHE=1", "OTHER=x"]
    assert (out / "seen").read_text() == "[]\n"


def test_scratch_working_dir_and_workdir_forms(registry: str, ctx: Path) -> None:
    (ctx / "a.txt").write_text("a\n")
    out, _ = build(ctx, "FROM scratch\nCOPY a.txt /\n", output="oci")
    assert image_config(out)["config"]["WorkingDir"] == "/"

    ops = llb(ctx, BASE + "WORKDIR /usr/src/\nRUN true\nWORKDIR /\nRUN true\nWORKDIR app/\nRUN true\n")
    mkdirs = [a["path"] for op in ops if op["op"] == "FileOp" for a in op["fields"]["actions"]]
    assert mkdirs == ["/usr/src", "/app"]  # `WORKDIR /` makes no mkdir
    assert [op["fields"]["cwd"] for op in ops if op["op"] == "ExecOp"] == ["/usr/src/", "/", "/app"]

    out, _ = build(ctx, BASE + "WORKDIR /usr/src/\nRUN pwd > /pwd\nWORKDIR /\n", output="oci")
    config = image_config(out)
    assert config["config"]["WorkingDir"] == "/"
    workdirs = [(h["created_by"], h.get("empty_layer", False)) for h in config["history"]
                if h["created_by"].startswith("WORKDIR")]
    assert workdirs == [("WORKDIR /usr/src/", False), ("WORKDIR /", True)]


def test_history_entries_as_buildkit_writes_them(registry: str, ctx: Path) -> None:
    (ctx / "a.txt").write_text("a\n")
    (ctx / "d").mkdir()
    (ctx / "d" / "f").write_text("f\n")
    out, _ = build(ctx, "FROM localhost:5055/busybox AS base\nARG A=1 B\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n"
                   "ENV E=2\nARG C=$E\nFROM base\nARG D\nENV A=9\nWORKDIR /w\n"
                   "COPY --chown=1:1 --chmod=644 a.txt d/ <<EOF2 dest/\nhello\nEOF2\n"
                   "COPY --parents d/f /p/\nRUN true\n", output="oci")
    history = [h["created_by"] for h in image_config(out)["history"]][1:]
    assert history == [
        "ARG A=1 B", "ARG BUILDKIT_SBOM_SCAN_STAGE=true", "ENV E=2", "ARG C=2", "ARG D", "ENV A=9", "WORKDIR /w",
        "COPY --chown=1:1 --chmod=644 a.txt d/ <<EOF2 dest/ # buildkit", "COPY --parents d/f /p/ # buildkit",
        # every ARG of the stage and its base, with its value in the step's environment, else its own
        "RUN |5 A=9 B= BUILDKIT_SBOM_SCAN_STAGE=true C=2 D= /bin/sh -c true # buildkit"]


def test_file_ops_read_a_missing_user_or_group_as_id_0(registry: str, ctx: Path) -> None:
    """BuildKit's readUser (solver/llbsolver/ops/user_linux.go): a name the destination's /etc/passwd or
    /etc/group lacks leaves the id as it was (0 for a user); a user name alone takes its primary gid."""
    (ctx / "f").write_text("f\n")
    out, _ = build(ctx, BASE + "RUN echo 'app:x:1000:2000::/:/bin/sh' >> /etc/passwd\n"
                   "RUN echo 'grp:x:3000:' >> /etc/group\n"
                   "COPY --chown=nosuch:nogroup f /a\nCOPY --chown=1000:nosuchgroup f /b\n"
                   "ADD --chown=app f /c\nCOPY --chown=app:grp f /d\nCOPY --chown=app:nosuch f /e\n"
                   "COPY --chown=nosuch f /g\nCOPY --chown=+7:-0 f /h\n"
                   "USER app\nWORKDIR /app-dir\nUSER ghost\nWORKDIR /ghost-dir\nUSER ghost:grp\nWORKDIR /ghost-grp\n")
    owners = {name: (st.st_uid, st.st_gid) for name in ("a", "b", "c", "d", "e", "g", "h", "app-dir", "ghost-dir",
                                                          "ghost-grp") for st in [(out / name).lstat()]}
    assert owners == {"a": (0, 65534), "b": (1000, 1000), "c": (1000, 2000), "d": (1000, 3000), "e": (1000, 2000),
                      "g": (0, 0), "h": (7, 0), "app-dir": (1000, 2000), "ghost-dir": (0, 0), "ghost-grp": (0, 3000)}
    # a step run as a user the image lacks still fails
    _, proc = build(ctx, BASE + "USER ghost\nWORKDIR /w\nRUN true\n", check=False)
    assert proc.returncode == 1
    assert "unable to find user ghost: no matching entries in passwd file" in proc.stderr


@pytest.mark.parametrize(("dockerfile", "error", "line"), [
    # only ARG may come before the first FROM: instructions.Parse finds no stage to add the command to
    ('CMD ["sh"]\n' + BASE, "no build stage in current context", 1),
    ("ARG X=1\n\nRUN a \\\n  b\n" + BASE, "no build stage in current context", 3),
    ("CMD x\nfoo bar\n" + BASE, "no build stage in current context", 1),
    # an instruction is read before its stage is looked for: an unknown one before FROM is reported as such
    ("{{ template }}\n" + BASE, "dockerfile parse error on line 1: unknown instruction: {{", 1),
    ("Frm x\n", "dockerfile parse error on line 1: unknown instruction: Frm (did you mean from?)", 1),
    # quoted as written, the suggestion in its case when the name is all lower or all upper case
    (BASE + "image foo\n", "dockerfile parse error on line 2: unknown instruction: image", 2),
    (BASE + "runn foo\n", "dockerfile parse error on line 2: unknown instruction: runn (did you mean run?)", 2),
    (BASE + "RUNN foo\n", "dockerfile parse error on line 2: unknown instruction: RUNN (did you mean RUN?)", 2),
    (BASE + "Runn foo\n", "dockerfile parse error on line 2: unknown instruction: Runn (did you mean run?)", 2),
])
def test_instruction_errors_before_and_after_from_as_buildkit_words_them(ctx: Path, dockerfile: str, error: str,
                                                                         line: int) -> None:
    _, proc = build(ctx, dockerfile, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"ERROR: failed to solve: {error}\n" in proc.stderr
    assert f"Dockerfile:{line}" in proc.stderr and "only ARG may come before FROM" not in proc.stderr
    checked = subprocess.run(WORKBENCH + ["check", ctx.name], cwd=ctx.parent, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 1 and f"ERROR: {error}\n" in checked.stderr, checked.stderr
