"""Every visible conformance case built by an unprivileged user (wbtest, with subordinate ids): the exported
image must equal what BuildKit v0.20 built as root, file owners included.

The cases' folders are root's, so they are copied once into a folder the user owns. One `workbench build` a
case, through the user's build server (started by the first build), all sharing one state root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONFORMANCE
from tests.rootless.conftest import RootlessUser
from tests.test_conformance import CASES, conformance_run, ocitree


def _give(tree: Path, user: RootlessUser) -> None:
    """`tree` and everything below it owned by `user` (links themselves, not what they point at)."""
    os.lchown(tree, user.uid, user.gid)
    for top, dirs, files in os.walk(tree):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), user.uid, user.gid)


@pytest.fixture(scope="module")
def user_cases(rootless_user: RootlessUser) -> Iterator[Path]:
    """The cases, copied (modes and links kept) into a folder of the user's; a state root of its own beside."""
    work = rootless_user.mkdir("conformance")
    shutil.copytree(CONFORMANCE / "cases", work / "cases", symlinks=True)
    _give(work, rootless_user)
    yield work
    rootless_user.run(["prune", "--all", "--root", str(work / "root")], timeout=120)
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("case", CASES)
def test_case_rootless(case: str, rootless_user: RootlessUser, user_cases: Path, registry: str) -> None:
    case_dir = user_cases / "cases" / case
    meta = conformance_run.load_case(str(case_dir))
    expected = json.loads((case_dir / "expected.json").read_text())
    out = case_dir / "out.tar"
    cmd = conformance_run.workbench_cmd(str(case_dir), meta, str(out))
    args = ["build", "--root", str(user_cases / "root")] + cmd[cmd.index("build") + 1:]
    proc = rootless_user.run(args, cwd=case_dir)
    if expected.get("fails"):
        assert proc.returncode != 0, "built, but BuildKit fails this case"
        assert re.search(meta.get("error_pattern", ""), proc.stdout + proc.stderr, re.I), proc.stderr[-800:]
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rootless:" not in proc.stderr, proc.stderr[-2000:]  # subordinate ids: no fallback taken
    base = ocitree.describe(registry)["tree"]
    diff = conformance_run.diff(expected, ocitree.against_base(ocitree.describe(str(out)), base))
    assert not diff, "\n".join(diff)
