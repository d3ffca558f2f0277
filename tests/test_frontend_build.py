"""Dockerfile 1.14 features built for real (runc, overlayfs, the local registry), checked in the exported files."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wb

BASE = "FROM localhost:5055/busybox\n"


def build(ctx: Path, dockerfile: str, *args: str, check: bool = True) -> tuple[Path, subprocess.CompletedProcess[str]]:
    (ctx / "Dockerfile").write_text(dockerfile)
    out = ctx.parent / (ctx.name + "-out")
    proc = wb(str(ctx), "-o", f"type=local,dest={out}", *args, root=ctx.parent / "root", check=check)
    return out, proc


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    return c


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def test_copy_link_chmod_exclude_parents(registry: str, ctx: Path) -> None:
    (ctx / "src" / "a" / "b").mkdir(parents=True)
    (ctx / "src" / "a" / "b" / "x.go").write_text("x\n")
    (ctx / "src" / "a" / "b" / "notes.md").write_text("md\n")
    (ctx / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(ctx / "run.sh", 0o640)
    out, _ = build(ctx, BASE + "RUN echo base > /base\n"
                   "COPY --link run.sh /bin/linked.sh\n"
                   "COPY --chmod=u+x,g=r run.sh /sym.sh\n"
                   "COPY --exclude=**/*.md src/ /nomd/\n"
                   "COPY --parents ./src/./a/b/*.go /p/\n")
    assert (out / "base").read_text() == "base\n"  # --link stacks on the base
    assert (out / "bin" / "linked.sh").read_text() == "#!/bin/sh\n"
    assert (out / "sym.sh").stat().st_mode & 0o7777 == 0o740
    assert (out / "nomd" / "a" / "b" / "x.go").exists() and not (out / "nomd" / "a" / "b" / "notes.md").exists()
    assert (out / "p" / "a" / "b" / "x.go").read_text() == "x\n"


def test_add_local_archive_url_with_checksum_and_git(registry: str, ctx: Path, http_dir: tuple[str, Path],
                                                     tmp_path: Path) -> None:
    url, served = http_dir
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"inside\n"
        info = tarfile.TarInfo("pkg/inside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (ctx / "pkg.tgz").write_bytes(buf.getvalue())
    (served / "tool.bin").write_bytes(b"tool v1\n")
    digest = "sha256:" + hashlib.sha256(b"tool v1\n").hexdigest()
    # a git repository served over dumb HTTP
    work = tmp_path / "repo"
    work.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "one"], ["tag", "v1"]):
        if cmd[0] == "add":
            (work / "README").write_text("readme\n")
            (work / "sub").mkdir()
            (work / "sub" / "f").write_text("in sub\n")
        subprocess.run(["git", *cmd], cwd=work, check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(served / "repo.git")], check=True)
    subprocess.run(["git", "update-server-info"], cwd=served / "repo.git", check=True)

    out, _ = build(ctx, BASE + "ADD pkg.tgz /x/\n"
                   f"ADD --checksum={digest} {url}/tool.bin /opt/\n"
                   f"ADD {url}/repo.git#v1:sub /fromgit/\n"
                   f"ADD --keep-git-dir=true {url}/repo.git#main /withgit\n"
                   "COPY pkg.tgz /still-an-archive.tgz\n")
    assert (out / "x" / "pkg" / "inside.txt").read_text() == "inside\n"
    tool = out / "opt" / "tool.bin"
    assert tool.read_text() == "tool v1\n" and tool.stat().st_mode & 0o777 == 0o600
    assert (out / "fromgit" / "f").read_text() == "in sub\n" and not (out / "fromgit" / ".git").exists()
    assert (out / "withgit" / "README").read_text() == "readme\n" and (out / "withgit" / ".git").is_dir()
    assert (out / "still-an-archive.tgz").read_bytes() == buf.getvalue()

    bad = "sha256:" + "0" * 64
    _, proc = build(ctx, BASE + f"ADD --checksum={bad} {url}/tool.bin /opt/\n", check=False)
    assert proc.returncode == 1 and "digest mismatch" in proc.stderr and ">>> ADD --checksum" in proc.stderr


def test_secrets_reach_the_step_but_never_the_image(registry: str, ctx: Path, tmp_path: Path) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text("s3cr3t-value")
    out, proc = build(ctx, BASE + "RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /len\n"
                      "RUN --mount=type=secret,id=api,env=API_KEY sh -c 'echo ${#API_KEY} > /envlen'\n",
                      "--secret", f"id=tok,src={secret}", "--secret", "id=api,env=WB_TEST_API",
                      "--progress", "rawjson")
    assert (out / "len").read_text().strip() == "12"
    assert (out / "envlen").read_text().strip() == str(len(os.environ.get("WB_TEST_API", "")))
    assert not (out / "run" / "secrets").exists()
    for path in out.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert b"s3cr3t-value" not in path.read_bytes(), path
    assert "s3cr3t-value" not in proc.stdout + proc.stderr


def test_secret_env_from_client_environment(registry: str, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(BASE + "RUN --mount=type=secret,id=api,env=API_KEY,required "
                                    "sh -c 'echo ${#API_KEY} > /envlen'\n")
    out = ctx.parent / "out"
    env = {**os.environ, "WB_TEST_API": "abcdef"}
    from tests.conftest import WORKBENCH

    proc = subprocess.run(WORKBENCH + ["build", "--root", str(ctx.parent / "root"), "--progress", "plain",
                                       "--secret", "id=api,env=WB_TEST_API", "-o", f"type=local,dest={out}",
                                       str(ctx)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "envlen").read_text().strip() == "6"


def test_missing_required_secret_fails_clearly(registry: str, ctx: Path) -> None:
    _, proc = build(ctx, BASE + "RUN --mount=type=secret,id=nope,required true\n", check=False)
    assert proc.returncode == 1 and "secret nope" in proc.stderr and "not found" in proc.stderr
    assert "Dockerfile:2" in proc.stderr


def test_bad_secret_flag_names_the_flag(ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(BASE)
    proc = wb(str(ctx), "--secret", "id=x,src=/does/not/exist", root=ctx.parent / "root", check=False)
    assert proc.returncode == 2 and "--secret id=x,src=/does/not/exist" in proc.stderr


def test_entitlements_for_network_host_and_insecure(registry: str, ctx: Path) -> None:
    _, proc = build(ctx, BASE + "RUN --network=host true\n", check=False)
    assert proc.returncode == 1 and "network.host is not allowed" in proc.stderr and "Dockerfile:2" in proc.stderr
    out, _ = build(ctx, BASE + "RUN --network=host echo ok > /ok\n", "--allow", "network.host")
    assert (out / "ok").read_text() == "ok\n"
    _, proc = build(ctx, BASE + "RUN --security=insecure true\n", check=False)
    # BuildKit's error line, then the way out
    assert proc.returncode == 1 and proc.stderr.rstrip().endswith(
        "ERROR: failed to solve: failed to load LLB: security.insecure is not allowed\n"
        "hint: grant it with --allow security.insecure")
    out, _ = build(ctx, BASE + "RUN --security=insecure grep CapEff /proc/self/status > /caps\n",
                   "--allow", "security.insecure")
    caps = int((out / "caps").read_text().split()[1], 16)
    assert caps & (1 << 21)  # CAP_SYS_ADMIN: not in the default set, granted by --security=insecure


def test_network_none_has_only_loopback(registry: str, ctx: Path) -> None:
    out, _ = build(ctx, BASE + "RUN --network=none ls /sys/class/net > /nets\n")
    assert (out / "nets").read_text().split() == ["lo"]


def test_heredoc_and_onbuild_end_to_end(registry: str, ctx: Path) -> None:
    out, _ = build(ctx, "FROM localhost:5055/busybox AS base\nONBUILD RUN echo trig > /trig\n"
                   "FROM base\nRUN <<EOF\n#!/bin/sh\necho \"$0\" > /script\nEOF\n"
                   "COPY <<EOF /etc/motd\nwelcome\nEOF\n")
    assert (out / "trig").read_text() == "trig\n"
    assert (out / "script").read_text() == "/dev/pipes/EOF\n"
    assert (out / "etc" / "motd").read_text() == "welcome\n"
    assert not (out / "dev" / "pipes").exists()
