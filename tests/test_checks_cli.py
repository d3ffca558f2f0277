"""Build checks wired into the CLI: `workbench check` and the warnings / failures of `workbench build`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import WORKBENCH, wb

BAD = "FROM localhost:5055/busybox AS Build\nENV A b\nRUN true\n"
GOOD = "FROM localhost:5055/busybox AS build\nENV A=b\nRUN true\n"


def check(ctx: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + ["check", "--root", str(ctx / "root"), str(ctx), *args],
                          capture_output=True, text=True, timeout=120)


def test_check_reports_like_docker_build_check(registry: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(BAD)
    proc = check(tmp_path)
    assert proc.returncode == 1
    out = proc.stdout
    assert out.startswith("Check complete, 2 warnings have been found!\n")
    assert "WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n" \
           "Stage name 'Build' should be lowercase\nDockerfile:1\n" in out
    assert "   2 | >>> ENV A b" in out and "LegacyKeyValueFormat" in out


def test_check_clean_file_exits_zero(registry: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(GOOD)
    proc = check(tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "Check complete, no warnings found.\n")


def test_check_with_alternate_file_and_skip_build_arg(registry: str, tmp_path: Path) -> None:
    (tmp_path / "other.Dockerfile").write_text(BAD)
    proc = check(tmp_path, "-f", str(tmp_path / "other.Dockerfile"),
                 "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=StageNameCasing")
    assert proc.returncode == 1 and "StageNameCasing" not in proc.stdout and "LegacyKeyValueFormat" in proc.stdout
    proc = check(tmp_path, "-f", str(tmp_path / "other.Dockerfile"),
                 "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all")
    assert proc.returncode == 0


def test_check_bad_directive_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("# check=bogus\nFROM scratch\n")
    proc = check(tmp_path)
    assert proc.returncode == 1 and 'invalid check option "bogus"' in proc.stderr


def test_build_emits_check_warnings_and_still_builds(registry: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(BAD)
    proc = wb(str(tmp_path), root=tmp_path / "root")
    assert "StageNameCasing" in proc.stderr and "Stage name 'Build' should be lowercase" in proc.stderr


def test_build_fails_on_check_error_directive(registry: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("# check=error=true\n" + BAD)
    proc = wb(str(tmp_path), root=tmp_path / "root", check=False)
    assert proc.returncode == 1
    assert "lint violation found for rules: StageNameCasing, LegacyKeyValueFormat" in proc.stderr
    assert ">>> FROM localhost:5055/busybox AS Build" in proc.stderr
    # the build arg overrides the directive
    proc = wb(str(tmp_path), "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=error=false", root=tmp_path / "root")
    assert proc.returncode == 0
