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


@pytest.mark.parametrize(("argv", "enters"), [
    (["build", "."], True), (["build", "--addr", "unix:///x", "."], False), (["build", "--addr=tcp://h:1"], False),
    (["build", "--help"], False), (["tui"], True), (["debug", "."], True), (["du"], True), (["prune", "-a"], True),
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
