"""`workbench check` as `docker build --call=check` prints BuildKit v0.20's results (issue 16, items 8-10).

Expected texts follow BuildKit's code: ``dockerfile2llb.DockerfileLint`` (the checks ride on the conversion and
stop at its first error), ``subrequests/lint`` (warnings sorted by line, the error with its lines, the JSON
result) and ``errdefs.Source.Print`` (the excerpt). Every Dockerfile is FROM scratch: no registry is needed.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from tests.conftest import WORKBENCH
from workbench.frontend.dockerfile.checks import run_checks

URL = "https://docs.docker.com/go/dockerfile/rule/"


def check(tmp_path: Path, dockerfile: str, *args: str) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return subprocess.run(WORKBENCH + ["check", "--root", str(tmp_path / "root"), str(ctx), *args],
                          capture_output=True, text=True, timeout=120)


# -- item 8: what BuildKit cannot convert fails the check, after the warnings found before it ------------------

def test_unknown_instruction_fails_after_the_warnings_before_it(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch AS Build\nMAINTAINER me\nRUNN echo hi\nENV A b\n")
    assert proc.returncode == 1
    assert proc.stdout == (
        "Check complete, 2 warnings have been found!\n"
        "\n"
        f"WARNING: StageNameCasing - {URL}stage-name-casing/\n"
        "Stage name 'Build' should be lowercase\n"
        "Dockerfile:1\n"
        "--------------------\n"
        "   1 | >>> FROM scratch AS Build\n"
        "   2 |     MAINTAINER me\n"
        "   3 |     RUNN echo hi\n"
        "--------------------\n"
        "\n"
        f"WARNING: MaintainerDeprecated - {URL}maintainer-deprecated/\n"
        "Maintainer instruction is deprecated in favor of using label\n"
        "Dockerfile:2\n"
        "--------------------\n"
        "   1 |     FROM scratch AS Build\n"
        "   2 | >>> MAINTAINER me\n"
        "   3 |     RUNN echo hi\n"
        "   4 |     ENV A b\n"
        "--------------------\n"
        "\n")
    # LegacyKeyValueFormat (line 4) is never reached: instructions.Parse stopped at line 3
    assert proc.stderr == (
        "Dockerfile:3\n"
        "--------------------\n"
        "   1 |     FROM scratch AS Build\n"
        "   2 |     MAINTAINER me\n"
        "   3 | >>> RUNN echo hi\n"
        "   4 |     ENV A b\n"
        "   5 |     \n"
        "--------------------\n"
        "ERROR: dockerfile parse error on line 3: unknown instruction: RUNN (did you mean RUN?)\n")


def test_unknown_instruction_in_a_stage_the_build_does_not_use(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch AS unused\nRUNN echo hi\n\nFROM scratch\nCOPY a b\n")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.endswith("ERROR: dockerfile parse error on line 2: unknown instruction: RUNN "
                                "(did you mean RUN?)\n")
    assert "   2 | >>> RUNN echo hi\n" in proc.stderr


def test_unknown_flag_in_a_stage_the_build_does_not_use(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch AS Unused\nCOPY --chmown=1 a b\n\nFROM scratch\nCOPY a b\n")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Check complete, 1 warning has been found!\n")  # StageNameCasing, line 1
    assert "   2 | >>> COPY --chmown=1 a b\n" in proc.stderr
    assert proc.stderr.endswith("ERROR: dockerfile parse error on line 2: unknown flag: --chmown "
                                "(did you mean chown?)\n")


def test_from_with_two_arguments(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch\nFROM scratch base\n")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        "Dockerfile:2\n"
        "--------------------\n"
        "   1 |     FROM scratch\n"
        "   2 | >>> FROM scratch base\n"
        "   3 |     \n"
        "--------------------\n"
        "ERROR: dockerfile parse error on line 2: FROM requires either one or three arguments\n")


def test_bad_modifier_keeps_the_warnings_of_the_steps_before_it(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch\nENV A b\nWORKDIR ${A:/x}\nENV C d\n")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Check complete, 1 warning has been found!\n\n"
                                  f"WARNING: LegacyKeyValueFormat - {URL}legacy-key-value-format/\n")
    assert "Dockerfile:2\n" in proc.stdout and "Dockerfile:4" not in proc.stdout  # the ENV after it: not dispatched
    assert proc.stderr.endswith("   3 | >>> WORKDIR ${A:/x}\n   4 |     ENV C d\n   5 |     \n--------------------\n"
                                'ERROR: failed to process "${A:/x}": unsupported modifier (:/) in substitution\n')


def test_bad_modifier_in_an_unused_stage_fails_check_but_not_its_target(tmp_path: Path) -> None:
    dockerfile = "FROM scratch AS unused\nWORKDIR ${A:/x}\n\nFROM scratch AS app\nENV A=b\n"
    proc = check(tmp_path, dockerfile)  # no target: every stage is checked, as BuildKit's lint does
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.endswith("   2 | >>> WORKDIR ${A:/x}\n   3 |     \n   4 |     FROM scratch AS app\n"
                                "--------------------\n"
                                'ERROR: failed to process "${A:/x}": unsupported modifier (:/) in substitution\n')
    proc = check(tmp_path, dockerfile, "--target", "app")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Check complete, no warnings found.\n", "")


def test_check_error_directive_fails_with_the_rules(tmp_path: Path) -> None:
    proc = check(tmp_path, "# check=error=true\nFROM scratch AS Build\nENV A b\n")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Check complete, 2 warnings have been found!\n")
    assert proc.stderr == "ERROR: lint violation found for rules: StageNameCasing, LegacyKeyValueFormat\n"


# -- item 9: the stages the build reaches -----------------------------------------------------------------------

def test_copy_from_a_duplicated_name_reaches_the_last_stage_of_that_name(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch AS a\nWORKDIR first\n\nFROM scratch AS a\nWORKDIR second\n\n"
                           "FROM scratch AS app\nCOPY --from=a /x /y\n", "--target", "app")
    assert "Relative workdir \"second\"" in proc.stdout
    assert "Relative workdir \"first\"" not in proc.stdout  # findStateByName: the last stage named a


def test_base_image_shell_silences_json_args_recommended() -> None:
    text = "FROM example.com/pwsh\nCMD Write-Host hi\n"
    assert run_checks(text, base_shell=lambda ref: True).warnings == []
    assert [w.rule for w in run_checks(text, base_shell=lambda ref: False).warnings] == ["JSONArgsRecommended"]


# -- item 10: BuildKit's text and JSON ---------------------------------------------------------------------------

def test_multi_line_warning_excerpt(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch\n\nLABEL a=b\n\nCMD echo \\\n  hi\n\n")
    assert proc.stdout == (
        "Check complete, 1 warning has been found!\n"
        "\n"
        f"WARNING: JSONArgsRecommended - {URL}json-args-recommended/\n"
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n"
        "Dockerfile:5\n"
        "--------------------\n"
        "   4 |     \n"
        "   5 | >>> CMD echo \\\n"
        "   6 | >>>   hi\n"
        "   7 |     \n"
        "--------------------\n")


def test_warning_on_the_last_line_shows_the_line_after_it(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch\nCMD echo hi")  # no final newline: nothing after line 2
    assert proc.stdout.endswith("Dockerfile:2\n--------------------\n   1 |     FROM scratch\n"
                                "   2 | >>> CMD echo hi\n--------------------\n")
    proc = check(tmp_path, "FROM scratch\nCMD echo hi\n")
    assert proc.stdout.endswith("   2 | >>> CMD echo hi\n   3 |     \n--------------------\n")


def test_warnings_are_printed_in_line_order(tmp_path: Path) -> None:
    # found in BuildKit's order (casing checks before dispatch), printed by line
    proc = check(tmp_path, "FROM scratch\nENV A b\nfrom scratch as Two\n")
    rules = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("WARNING: ")]
    assert rules == ["LegacyKeyValueFormat", "StageNameCasing", "ConsistentInstructionCasing"]


def test_json_format_is_the_lint_result(tmp_path: Path) -> None:
    dockerfile = "FROM scratch\nWORKDIR <rel>\nWORKDIR ${A:/x}\n"
    proc = check(tmp_path, dockerfile, "--format", "json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {
        "warnings": [{
            "ruleName": "WorkdirRelativePath",
            "description": "Relative workdir without an absolute workdir declared within the build can have "
                           "unexpected results if the base image changes",
            "url": f"{URL}workdir-relative-path/",
            "detail": 'Relative workdir "<rel>" can have unexpected results if the base image changes',
            "location": {"ranges": [{"start": {"line": 2}, "end": {"line": 2}}]},
        }],
        "sources": [{"filename": "Dockerfile", "data": base64.b64encode(dockerfile.encode()).decode(),
                     "language": "Dockerfile"}],
        "buildError": {"message": 'failed to process "${A:/x}": unsupported modifier (:/) in substitution',
                       "location": {"ranges": [{"start": {"line": 3}, "end": {"line": 3}}]}},
    }
    assert '"detail": "Relative workdir \\"\\u003crel\\u003e\\" can' in proc.stdout  # Go's HTML-safe escapes
    assert proc.stderr.endswith("ERROR: failed to process \"${A:/x}\": unsupported modifier (:/) in substitution\n")


def test_json_format_without_warnings(tmp_path: Path) -> None:
    proc = check(tmp_path, "FROM scratch\n", "--format", "json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"warnings": None, "sources": [
        {"filename": "Dockerfile", "data": base64.b64encode(b"FROM scratch\n").decode(), "language": "Dockerfile"}]}
