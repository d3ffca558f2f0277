"""The bad-input corpus through `workbench build`, `check`, `inspect ast` and `inspect llb` (issue 15, item 9).

Every run ends within 10 s with exit status 0 or 1 and never a traceback; the commands that
corpus/expected.json names must fail, with an `ERROR:` line and the Dockerfile's name. All cases run in
this process (the CLI's own `main`, as the build server runs it); a sample also runs through the real
`workbench` command. Regenerate the corpus with `python tests/badinput/make_corpus.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.conftest import WORKBENCH
from workbench.cli import main

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, list[str]] = json.loads((CORPUS / "expected.json").read_text())
LIMIT_S = 10
SAMPLE = ["binary-elf", "invalid-utf8-keyword", "nul-bytes", "crlf", "10000-chained-stages", "nested-json-arrays",
          "expansion-billion-laughs", "expansion-redos-replace-all", "ignore-star-chain", "many-heredocs"]


def _argv(command: str, dockerfile: Path, context: Path, root: Path) -> list[str]:
    if command == "ast":
        return ["inspect", "ast", str(dockerfile)]
    where = ["--root", str(root), "-f", str(dockerfile), str(context)]
    if command == "build":
        return ["build", "--progress", "plain", *where]
    return ["check", *where] if command == "check" else ["inspect", "llb", *where]


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small context, with names the pathological .dockerignore patterns work hard on."""
    ctx = tmp_path_factory.mktemp("context")
    for name in ("a" * 40, "a" * 40 + "x", "a" * 20 + "b", "f", "a", "keep", "x.log", "f0", "f1"):
        (ctx / name).write_text(name)
    (ctx / "dir1").mkdir()
    (ctx / "dir1" / ("a" * 40)).write_text("deep")
    return ctx


@pytest.fixture(scope="module")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state") / "root"


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise _Timeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_in_process(argv: list[str]) -> tuple[object, str, str]:
    """(exit status or the exception that escaped, stdout, stderr) of `workbench ARGV` run here."""
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    status: object
    try:
        with _deadline(LIMIT_S), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(argv, via_server=True)
    except BaseException as e:  # noqa: BLE001 - whatever escapes is the finding
        status = e
    return status, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace")


def _check_outcome(name: str, command: str, status: object, stdout: str, stderr: str) -> None:
    what = f"{command} {name}: status {status!r}\nstderr: {stderr[-2000:]}"
    assert status in (0, 1), what
    assert "Traceback" not in stdout + stderr, what
    if command in EXPECTED[name]:
        assert status == 1, what
    if status == 1 and stderr.strip():
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("ERROR: "), what
        assert name in stderr, what  # the Dockerfile is named (file:line above the excerpt, or in the line)
    elif status == 1:
        assert command == "check" and "WARNING: " in stdout, what


def test_corpus_is_large_and_small_enough() -> None:
    files = [p for p in CORPUS.iterdir() if p.is_file()]
    assert len(files) >= 100
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert set(EXPECTED) == {p.name for p in files if p.name.endswith(".Dockerfile")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_case(name: str, context: Path, state_root: Path) -> None:
    for command in ("build", "check", "ast", "llb"):
        status, stdout, stderr = _run_in_process(_argv(command, CORPUS / name, context, state_root))
        _check_outcome(name, command, status, stdout, stderr)


@pytest.mark.parametrize("case", SAMPLE)
def test_sample_through_the_workbench_command(case: str, context: Path, state_root: Path) -> None:
    [name] = [n for n in EXPECTED if n.split("-", 1)[1] == case + ".Dockerfile"]
    for command in ("build", "check", "ast", "llb"):
        proc = subprocess.run(WORKBENCH + _argv(command, CORPUS / name, context, state_root), capture_output=True,
                              timeout=LIMIT_S)
        _check_outcome(name, command, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                       proc.stderr.decode("utf-8", "replace"))
