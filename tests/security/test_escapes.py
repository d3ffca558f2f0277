"""A hostile Dockerfile or context cannot read or write the host outside its context, snapshots and outputs.

Each case aims at a host path made for the test (a sentinel file or directory under a fresh dir): a write
would change it, a read would put its secret text into the image. The image is exported with type=local and
inspected; the sentinel must be untouched and its text absent.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import wb


@pytest.fixture()
def host(tmp_path: Path) -> Path:
    """A host dir the build must never touch: holds `secret` (its text must never reach an image)."""
    h = tmp_path / "host"
    (h / "dir").mkdir(parents=True)
    (h / "secret").write_text("HOST-SECRET\n")
    (h / "dir" / "kept").write_text("kept\n")
    return h


def host_unchanged(h: Path) -> None:
    assert sorted(p.name for p in h.rglob("*")) == ["dir", "kept", "secret"], list(h.rglob("*"))
    assert (h / "secret").read_text() == "HOST-SECRET\n" and (h / "dir" / "kept").read_text() == "kept\n"


def build(tmp_path: Path, dockerfile: str, files: dict[str, bytes] | None = None,
          links: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        (ctx / name).write_bytes(data)
    for name, target in (links or {}).items():
        os.symlink(target, ctx / name)
    return wb(str(ctx), "--output", f"type=local,dest={tmp_path / 'out'}", root=tmp_path / "root", check=False)


def exported_text(tmp_path: Path) -> str:
    """Every regular file of the exported filesystem, concatenated (to look for the host's secret)."""
    out = tmp_path / "out"
    return "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("source", ["leak", "dirlink", "dirlink/kept", "."])
def test_context_symlinks_to_the_host_resolve_inside_the_context(tmp_path: Path, host: Path, registry: str,
                                                                 source: str) -> None:
    """As in BuildKit, a source path is resolved inside the context: a link to a host path names a path of
    the context (here missing), and a copied tree keeps such links as links."""
    proc = build(tmp_path, f"FROM localhost:5055/busybox\nCOPY {source} /c/\n",
                 links={"leak": str(host / "secret"), "dirlink": str(host / "dir")})
    if source == ".":
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert os.readlink(tmp_path / "out" / "c" / "leak") == str(host / "secret")
        assert "HOST-SECRET" not in exported_text(tmp_path) and "kept" not in exported_text(tmp_path)
    else:
        assert proc.returncode != 0 and "not found" in proc.stderr, proc.stderr[-1500:]
    host_unchanged(host)


def test_a_path_through_a_context_link_to_the_host_is_not_read(tmp_path: Path, host: Path, registry: str) -> None:
    proc = build(tmp_path, "FROM localhost:5055/busybox\nCOPY dirlink/../secret /s\n",
                 links={"dirlink": str(host / "dir")})
    assert "HOST-SECRET" not in (exported_text(tmp_path) if proc.returncode == 0 else "")
    host_unchanged(host)


@pytest.mark.parametrize("source", ["../host/secret", "/../host/secret", "sub/../../host/secret"])
def test_dot_dot_sources_stay_in_the_context(tmp_path: Path, host: Path, registry: str, source: str) -> None:
    proc = build(tmp_path, f"FROM localhost:5055/busybox\nCOPY {source} /s\n")
    assert proc.returncode != 0 and "not found" in proc.stderr, proc.stderr[-1500:]
    host_unchanged(host)


def test_bind_mount_sources_stay_in_the_context(tmp_path: Path, host: Path, registry: str) -> None:
    proc = build(tmp_path, "FROM localhost:5055/busybox\n"
                 "RUN --mount=type=bind,source=../host,target=/m,rw cat /m/secret > /s; echo x > /m/new; true\n")
    if proc.returncode == 0:
        assert "HOST-SECRET" not in exported_text(tmp_path)
    host_unchanged(host)


def test_copy_into_a_stage_symlink_to_a_host_path_writes_inside_the_image(tmp_path: Path, host: Path,
                                                                          registry: str) -> None:
    """`/x -> HOST_DIR` made by a step names HOST_DIR *inside the image*: COPY through it writes there."""
    proc = build(tmp_path, "FROM localhost:5055/busybox\n"
                           f"RUN ln -s {host / 'dir'} /x && ln -s {host / 'secret'} /f\n"
                           "COPY payload /x/\n"
                           "COPY payload /f\n", files={"payload": b"PAYLOAD\n"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    inside = tmp_path / "out" / str(host / "dir").lstrip("/") / "payload"
    assert inside.read_text() == "PAYLOAD\n"
    host_unchanged(host)


def test_copy_from_a_stage_symlink_reads_the_stage_not_the_host(tmp_path: Path, host: Path, registry: str) -> None:
    proc = build(tmp_path, "FROM localhost:5055/busybox AS s\n"
                           f"RUN ln -s {host} /x\n"
                           "FROM localhost:5055/busybox\n"
                           "COPY --from=s /x/secret /s\n")
    assert proc.returncode != 0 or "HOST-SECRET" not in exported_text(tmp_path)
    host_unchanged(host)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def test_add_of_a_hostile_tar_writes_nothing_outside_the_snapshot(tmp_path: Path, host: Path,
                                                                   registry: str) -> None:
    evil = _tar([
        (_member("../../../../../../../../" + str(host / "dotdot").lstrip("/")), b"x"),
        (_member(str(host / "absolute")), b"x"),
        (_member("escape", tarfile.SYMTYPE, str(host / "dir")), None),
        (_member("escape/through-link"), b"x"),
        (_member("rel", tarfile.SYMTYPE, "../../../../../../../.." + str(host / "dir")), None),
        (_member("rel/through-rel-link"), b"x"),
        (_member("hard", tarfile.LNKTYPE, str(host / "secret")), None),
        (_member("hard2", tarfile.LNKTYPE, "../../../../../../../.." + str(host / "secret")), None),
        (_member("dev", tarfile.BLKTYPE, mode=0o666), None),
    ])
    proc = build(tmp_path, "FROM localhost:5055/busybox\nADD evil.tar /t/\n", files={"evil.tar": evil})
    if proc.returncode == 0:
        assert "HOST-SECRET" not in exported_text(tmp_path)
    else:  # refused: said in words, not as a Python exception
        assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr.replace("ERROR:", ""), proc.stderr
    host_unchanged(host)
    # Whatever a tar held, nothing below the root is reachable by other users (the device node included).
    assert (tmp_path / "root").stat().st_mode & 0o077 == 0


def test_a_dockerfile_cannot_mount_or_read_host_paths_with_run(tmp_path: Path, host: Path, registry: str) -> None:
    """Cache, tmpfs and secret mounts live under the root; none can be pointed at a host path."""
    proc = build(tmp_path, "FROM localhost:5055/busybox\n"
                           f"RUN --mount=type=cache,target=/c,id={host} echo x > /c/new && ls /c > /listing\n"
                           f"RUN --mount=type=cache,target=/d,id=../../../../{host.name} echo y > /d/new\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "listing").read_text() == "new\n"
    host_unchanged(host)
