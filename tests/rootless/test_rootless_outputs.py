"""An unprivileged user's exporters, registry push, image store, history, `du` and `prune`: image owners kept
in every archive and in the registry, and `prune --all` leaves a state root the user can remove."""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from tests.rootless.conftest import RootlessUser
from tests.test_conformance import ocitree

DOCKERFILE = """\
FROM localhost:5055/busybox
COPY --chown=1000:1000 f /f
RUN --mount=type=cache,target=/c mkdir -p /c/k && touch /c/k/x && chown -R 1234:1234 /c/k && chmod 700 /c/k \\
    && mkdir /d && touch /d/m && chown -R 1234:1234 /d && chmod 700 /d
"""
OWNERS = {"/f": "f 0644 1000:1000", "/d": "d 0700 1234:1234", "/d/m": "f 0644 1234:1234"}
PUSHED = "localhost:5055/rootless/x:1"


class Built:
    """The user's context, state root and the folder the outputs go to, after one build with -t rl/x:1."""

    def __init__(self, user: RootlessUser) -> None:
        self.user = user
        work = user.mkdir("outputs")
        self.ctx, self.out, self.root = work / "ctx", work / "out", work / "root"
        for d in (self.ctx, self.out):
            d.mkdir()
            os.chown(d, user.uid, user.gid)
        user.write(self.ctx / "Dockerfile", DOCKERFILE)
        user.write(self.ctx / "f", "from-context\n")

    def wb(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self.user.run([*args, "--root", str(self.root)], cwd=self.out)
        assert r.returncode == 0, (args, r.stderr[-3000:])
        return r


def _owners(tree: dict[str, str]) -> dict[str, str]:
    """The kind, mode and owner of each path of OWNERS in an ocitree tree (sizes and digests dropped)."""
    return {p: " ".join(tree[p].split()[:3]) for p in OWNERS if p in tree}


def _mine(user: RootlessUser, path: Path) -> None:
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid), path


@pytest.fixture(scope="module")
def built(rootless_user: RootlessUser, registry: str) -> Iterator[Built]:
    b = Built(rootless_user)
    b.wb("build", "--progress", "plain", "-t", "rl/x:1", "--output", f"type=docker,dest={b.out / 'docker.tar'}",
         "--output", f"type=tar,dest={b.out / 'fs.tar'}", str(b.ctx))
    yield b
    rootless_user.run(["prune", "--all", "--root", str(b.root)], timeout=120)
    subprocess.run(["rm", "-rf", str(b.root.parent)], check=False)


def test_docker_and_tar_outputs_keep_image_owners(built: Built) -> None:
    docker = built.out / "docker.tar"
    _mine(built.user, docker)
    assert _owners(ocitree.describe(str(docker))["tree"]) == OWNERS
    fs = built.out / "fs.tar"
    _mine(built.user, fs)
    with tarfile.open(fs) as t:
        got = {"/" + m.name.lstrip("./"): (m.uid, m.gid, m.mode & 0o7777) for m in t.getmembers()}
    assert {p: got[p] for p in OWNERS} == {"/f": (1000, 1000, 0o644), "/d": (1234, 1234, 0o700),
                                           "/d/m": (1234, 1234, 0o644)}


def test_push_to_the_registry_keeps_owners(built: Built, tmp_path: Path) -> None:
    built.wb("build", "--progress", "plain", "--output", f"type=image,name={PUSHED},push=true", str(built.ctx))
    # pulled back by root's workbench, with a state root of its own
    for args in (["image", "pull", PUSHED], ["image", "save", "-o", str(tmp_path / "pulled.tar"), PUSHED]):
        r = subprocess.run([*WORKBENCH, *args, "--root", str(tmp_path / "root")], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    assert _owners(ocitree.describe(str(tmp_path / "pulled.tar"))["tree"]) == OWNERS


def test_image_ls_save_load(built: Built) -> None:
    listed = built.wb("image", "ls").stdout
    row = next(line.split() for line in listed.splitlines() if line.startswith("rl/x "))
    saved = built.out / "saved.tar"
    built.wb("image", "save", "-o", str(saved), "rl/x:1")
    _mine(built.user, saved)
    assert _owners(ocitree.describe(str(saved))["tree"]) == OWNERS
    assert "Untagged: rl/x:1" in built.wb("image", "rm", "rl/x:1").stdout
    assert "rl/x " not in built.wb("image", "ls").stdout
    assert "Loaded image: rl/x:1" in built.wb("image", "load", "-i", str(saved)).stdout
    again = next(line.split() for line in built.wb("image", "ls").stdout.splitlines() if line.startswith("rl/x "))
    assert again[:3] == row[:3]  # repository, tag, image id


def test_history_ls_and_show(built: Built) -> None:
    rows = built.wb("history", "ls").stdout.splitlines()[1:]
    first = rows[-1].split()  # oldest: the fixture's build
    assert first[3] == "completed" and first[-1].endswith("ctx/Dockerfile"), rows
    shown = built.wb("history", "show", first[0]).stdout
    assert "Status:       completed" in shown
    assert f"Output:       type=docker,dest={built.out / 'docker.tar'}" in shown
    assert f"Output:       type=tar,dest={built.out / 'fs.tar'}" in shown
    assert f"Context:      {built.ctx}" in shown


def test_du_and_prune_all_leave_a_root_the_user_can_remove(built: Built) -> None:
    """Snapshots and cache mounts hold files owned by subordinate ids (1000, 1234 in the namespace) in folders
    of mode 0700 the user cannot enter from outside it; `prune --all` must remove them all."""
    user, root = built.user, built.root
    foreign = user.sh(f"find {root} ! -user {user.uid} -print 2>/dev/null").stdout.split()
    assert any("/snapshots/" in p for p in foreign) and any("/cachemounts/" in p for p in foreign), foreign
    du = built.wb("du").stdout
    assert "Total:" in du and "Total:          0B" not in du, du
    built.wb("prune", "--all")
    assert "Total:          0B" in built.wb("du").stdout
    assert user.sh(f"find {root} ! -user {user.uid} -print").stdout == ""
    removed = user.sh(f"rm -rf {root} && echo gone")
    assert removed.stdout.strip() == "gone" and not root.exists(), removed.stderr
