"""The `workbench debug` REPL's words and file views, without a build: its command table, step names, a
step's files with mounts and a working directory, the diff summary, the pager."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from workbench.debug.commands import COMMANDS, StepTable, help_lines, lookup
from workbench.debug.fsview import MountPoint, StepFiles, diff_trees, list_dir, read_file, summarize
from workbench.debug.repl import DebugRepl
from workbench.progress.events import SourceLocation, VertexCached, VertexStarted
from workbench.results import ViewError


def test_help_lists_every_command_the_repl_has() -> None:
    handlers = {name[4:] for name in dir(DebugRepl) if name.startswith("cmd_")}
    assert handlers == {c.name for c in COMMANDS}
    shown = "\n".join(help_lines())
    for c in COMMANDS:
        assert f"  {c.name}" in shown and c.text in shown
        for alias in c.aliases:
            assert lookup(alias) is c and alias in shown
    assert max(len(line) for line in help_lines()) <= 80  # fits an 80-column terminal
    assert help_lines("c") == help_lines("continue")


def test_steps_by_number_name_or_label() -> None:
    table = StepTable()
    for n, name in enumerate(["[1/3] FROM busybox", "[2/3] COPY a .", "[3/3] RUN make"], 1):
        table.note(VertexCached(f"d{n}", name, source=SourceLocation("Dockerfile", n, n), cache_key=f"k{n}"))
    assert table.get("2").name == "[2/3] COPY a ."
    assert table.get("RUN make").number == 3
    assert table.get("[1/3]").number == table.get("1/3").number == 1
    assert table.get("2").cache_key == "k2" and table.get("2").state == "cached"
    with pytest.raises(ValueError, match="several steps"):
        table.get("/3]")
    with pytest.raises(ValueError, match="no step"):
        table.get("9")
    table.note(VertexStarted("d4", "[1/1] RUN x", source=SourceLocation("Dockerfile", 4, 4)))
    assert table.get("4").state == "running"


def test_step_files_start_at_the_workdir_and_see_the_mounts(tmp_path: Path) -> None:
    root, wheels, secret = tmp_path / "root", tmp_path / "wheels", tmp_path / "secret"
    (root / "app").mkdir(parents=True)
    (root / "app" / "requirements.txt").write_text("flask\n")
    wheels.mkdir()
    (wheels / "flask.whl").write_text("w")
    secret.write_text("hunter2")
    files = StepFiles(root, "/app", (MountPoint("/wheels", wheels), MountPoint("/run/secrets/tok", secret, True),
                                     MountPoint("/tmp/scratch", None)))
    assert read_file(files, "requirements.txt") == b"flask\n"
    assert any(line.endswith("requirements.txt") for line in list_dir(files, "."))
    assert list_dir(files, "../wheels")[0].endswith("flask.whl")
    assert read_file(files, "/wheels/flask.whl") == b"w"
    assert any(line.endswith("wheels/") for line in list_dir(files, "/"))  # the mount point shows
    assert list_dir(files, "/tmp/scratch") == []
    with pytest.raises(ViewError, match="secret"):
        read_file(files, "/run/secrets/tok")
    with pytest.raises(ViewError, match="no such"):
        list_dir(files, "/nowhere")


def test_diff_summary_counts_and_sizes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
    (a / "same").write_text("x")
    (b / "same").write_text("x")
    (a / "gone").write_text("12345")
    (a / "edit").write_text("1")
    (b / "edit").write_text("123")
    (b / "new").mkdir()
    (b / "new" / "file").write_text("abcdef")
    changes = diff_trees(a, b)
    assert summarize(changes) == "2 added (6 B), 1 changed (1 B → 3 B), 1 removed (5 B)"
    assert summarize([]) == "0 added, 0 changed, 0 removed"


def test_details_are_printed_plainly_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    repl = DebugRepl(lambda _d: None, out, engine=None)  # type: ignore[arg-type]
    repl.page(["A /x (1 B)"])
    assert out.getvalue() == "A /x (1 B)\n"
    repl.run_command("clear")  # not a terminal: nothing to clear
    assert out.getvalue() == "A /x (1 B)\n"


def test_completion_offers_commands_help_topics_and_steps() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from workbench.debug.completion import DebugCompleter

    repl = DebugRepl(lambda _d: None, io.StringIO(), engine=None)  # type: ignore[arg-type]
    repl.steps.note(VertexCached("d1", "[1/1] FROM busybox", source=SourceLocation("Dockerfile", 1, 1)))
    completer = DebugCompleter(repl)

    def words(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert words("de") == ["delete"]
    assert words("help st") == ["steps"]
    assert words("ls / ") == ["1"]
    assert words("ls ") == []  # no pause: no paths to offer


def test_a_mount_below_directories_the_root_lacks_is_reachable_in_listings(tmp_path: Path) -> None:
    """A secret at /run/secrets/s in an image without /run: `ls /`, `ls /run` and `ls /run/secrets` lead to it
    (the REPL, the TUI's file browser and the DAP Filesystem scope list through the same `entries`)."""
    from workbench.debug.fsview import entries

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    secret = tmp_path / "s"
    secret.write_text("hidden")
    files = StepFiles(root, "/", (MountPoint("/run/secrets/s", secret, secret=True),))
    assert [e.name for e in entries(files, "/")] == ["etc", "run"]
    assert [(e.name, e.is_dir) for e in entries(files, "/run")] == [("secrets", True)]
    assert [(e.name, e.is_dir, e.size) for e in entries(files, "/run/secrets")] == [("s", False, 6)]
    with pytest.raises(ViewError):
        entries(files, "/nothing")
