"""/etc/subuid parsing as shadow-utils does, the newuidmap arguments, and which commands enter the namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.rootless.subid import Range, map_args, ranges
from workbench.rootless.userns import needed


def test_ranges_match_name_or_uid_and_skip_junk(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("# comment\nalice:100000:65536\nbob:200000:65536\n1001:300000:10\nalice:x:1\nalice:5:0\n"
                 "alice:400000:5\n\n")
    assert ranges(f, "alice", 1001) == [Range(100000, 65536), Range(300000, 10), Range(400000, 5)]
    assert ranges(f, "carol", 7) == []
    assert ranges(tmp_path / "missing", "alice", 1001) == []


def test_map_args_put_our_id_at_0_and_the_ranges_after_it() -> None:
    assert map_args(1001, [Range(100000, 65536), Range(300000, 10)]) == [
        "0", "1001", "1", "1", "100000", "65536", "65537", "300000", "10"]


def test_map_args_leave_out_ids_already_mapped() -> None:
    """Duplicate or overlapping /etc/subuid lines, or a range holding our own id, would make newuidmap fail: the
    kernel refuses a map whose host ids overlap. Later lines keep only what earlier ones left."""
    assert map_args(1001, [Range(100000, 65536), Range(100000, 65536)]) == [
        "0", "1001", "1", "1", "100000", "65536"]
    assert map_args(1001, [Range(100000, 100), Range(100050, 100)]) == [
        "0", "1001", "1", "1", "100000", "100", "101", "100100", "50"]
    assert map_args(1001, [Range(1000, 5)]) == [  # our own id inside a range: the range around it
        "0", "1001", "1", "1", "1000", "1", "2", "1002", "3"]
    triples = map_args(5, [Range(10 + 2 * i, 1) for i in range(400)])
    assert len(triples) == 3 * 340  # the kernel's limit on a map's lines


def _overlaps(args: list[str]) -> bool:
    spans = sorted((int(args[i + 1]), int(args[i + 1]) + int(args[i + 2])) for i in range(0, len(args), 3))
    return any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_mapped_host_ids_never_overlap() -> None:
    import random

    rng = random.Random(7)
    for _ in range(200):
        found = [Range(rng.randrange(0, 500), rng.randrange(1, 120)) for _ in range(rng.randrange(1, 6))]
        own = rng.randrange(0, 600)
        args = map_args(own, found)
        assert not _overlaps(args), (own, found, args)
        covered = {x for r in found for x in range(r.start, r.start + r.length)} | {own}
        mapped = {x for i in range(0, len(args), 3)
                  for x in range(int(args[i + 1]), int(args[i + 1]) + int(args[i + 2]))}
        assert mapped == covered  # nothing lost either


@pytest.mark.parametrize(("argv", "enters"), [
    (["build", "."], True), (["build", "--addr", "unix:///x", "."], False), (["build", "--addr=tcp://h:1"], False),
    (["build", "--help"], False), (["tui"], True), (["debug", "."], True), (["du"], True), (["prune", "-a"], True),
    (["dap"], True), (["dap", "--listen", "unix:/x"], False),
    (["image", "ls"], True), (["check", "."], False), (["inspect", "ast"], False), (["server", "stop"], False),
])
def test_commands_that_use_the_local_engine_enter(argv: list[str], enters: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKIT_HOST", raising=False)
    assert needed(argv) is enters


@pytest.mark.parametrize("argv", [["tui", "--addr", "unix:///x"], ["debug", "--addr=tcp://h:1", "."]])
def test_tui_and_debug_against_a_daemon_do_not_enter(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKIT_HOST", raising=False)
    assert needed(argv) is False
    monkeypatch.setenv("BUILDKIT_HOST", "unix:///x")
    assert needed(argv[:1]) is False


def test_a_user_with_duplicate_subuid_lines_builds(registry: str) -> None:
    """The same range twice and an overlapping one, as `usermod --add-subuids` run twice leaves them: the build's
    namespace still maps them (newuidmap refused the overlap before) and a chown to another id works."""
    from tests.rootless.conftest import SUBID_FILES, _ensure_user, _set_subids, _stop_server

    user = _ensure_user("wbdup", ranges=False)
    start = 300000 + 65536 * (user.uid % 100)
    try:
        for f in SUBID_FILES:
            with open(f, "a") as out:
                out.write(f"wbdup:{start}:65536\nwbdup:{start}:65536\n{user.uid}:{start + 100}:10\n")
        _stop_server(user)
        ctx = user.mkdir("dup")
        user.write(ctx / "Dockerfile", "FROM localhost:5055/busybox\n"
                                       "RUN touch /f && chown 1000:1000 /f && stat -c %u:%g /f > /owner\n")
        out = user.mkdir("dup-out")
        r = user.run(["build", "--progress", "plain", "--no-cache", "-o", f"type=local,dest={out}", str(ctx)])
        assert r.returncode == 0, r.stderr
        assert (out / "owner").read_text() == "1000:1000\n"
    finally:
        _stop_server(user)
        _set_subids("wbdup", False)
