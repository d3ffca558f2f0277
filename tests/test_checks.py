"""Dockerfile build checks (BuildKit v0.20 linter rules, messages and the check directive)."""

from __future__ import annotations

import pytest

from workbench.frontend.dockerfile.checks import run_checks
from workbench.frontend.dockerfile.linter import RULES, CheckConfigError, CheckWarning, parse_check_config
from workbench.frontend.dockerfile.parser import DockerfileParseError


def _warnings(text: str, rule: str, **kw: object) -> list[CheckWarning]:
    return [w for w in run_checks(text, **kw).warnings if w.rule == rule]  # type: ignore[arg-type]


def _one(text: str, rule: str, message: str, line: int, **kw: object) -> CheckWarning:
    found = _warnings(text, rule, **kw)
    assert [(w.message, w.start_line) for w in found] == [(message, line)]
    return found[0]


# (rule, triggering Dockerfile, message, line, clean Dockerfile, extra run_checks arguments)
CASES: list[tuple[str, str, str, int, str, dict[str, object]]] = [
    ("StageNameCasing", "FROM alpine AS Builder\n", "Stage name 'Builder' should be lowercase", 1,
     "FROM alpine AS builder\n", {}),
    ("FromAsCasing", "FROM alpine as builder\n", "'as' and 'FROM' keywords' casing do not match", 1,
     "FROM alpine AS builder\nfrom alpine as b2\n", {}),
    ("NoEmptyContinuation", "FROM alpine\nRUN echo a \\\n\n  b\n", "Empty continuation line", 4,
     "FROM alpine\nRUN echo a \\\n# comment\n  b\n", {}),
    ("ConsistentInstructionCasing", "FROM alpine\nrun echo a\nRUN echo b\n",
     "Command 'run' should match the case of the command majority (uppercase)", 2,
     "from alpine\nrun echo a\n", {}),
    ("DuplicateStageName", "FROM alpine AS a\nFROM alpine AS a\n",
     'Duplicate stage name "a", stage names should be unique', 2, "FROM alpine AS a\nFROM alpine AS b\n", {}),
    ("ReservedStageName", "FROM alpine AS scratch\n",
     'Stage name should not use the same name as reserved stage "scratch"', 1, "FROM alpine AS build\n", {}),
    ("JSONArgsRecommended", "FROM alpine\nCMD echo hi\n",
     "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals", 2,
     'FROM alpine\nCMD ["echo", "hi"]\nSHELL ["/bin/bash", "-c"]\nENTRYPOINT echo hi\n', {}),
    ("MaintainerDeprecated", "FROM alpine\nMAINTAINER me@example.org\n",
     "Maintainer instruction is deprecated in favor of using label", 2,
     'FROM alpine\nLABEL org.opencontainers.image.authors="me@example.org"\n', {}),
    ("UndefinedArgInFrom", "ARG VERSION=1\nFROM alpine:$VERSIN\n",
     "FROM argument 'VERSIN' is not declared (did you mean VERSION?)", 2,
     "ARG VERSION=1\nFROM alpine:$VERSION\nFROM --platform=$BUILDPLATFORM alpine\n", {}),
    ("WorkdirRelativePath", "FROM alpine\nWORKDIR app\n",
     'Relative workdir "app" can have unexpected results if the base image changes', 2,
     "FROM alpine\nWORKDIR /app\nWORKDIR sub\n", {}),
    ("UndefinedVar", "FROM alpine\nENV PATH=$PAHT:/x\n", "Usage of undefined variable '$PAHT' (did you mean $PATH?)", 2,
     "FROM alpine\nARG NAME\nARG TARGETOS\nENV A=$NAME B=$TARGETOS C=$PATH\nCOPY $A /x\nRUN echo $UNSET\n", {}),
    ("MultipleInstructionsDisallowed", 'FROM alpine\nCMD ["a"]\nCMD ["b"]\n',
     "Multiple CMD instructions should not be used in the same stage because only the last one will be used", 2,
     'FROM alpine\nCMD ["a"]\nFROM alpine\nCMD ["b"]\n', {}),
    ("LegacyKeyValueFormat", "FROM alpine\nENV FOO bar\n",
     '"ENV key=value" should be used instead of legacy "ENV key value" format', 2,
     "FROM alpine\nENV FOO=bar\nLABEL a=b\n", {}),
    ("InvalidBaseImagePlatform", "FROM alpine\n",
     'Base image alpine was pulled with platform "linux/arm64", expected "linux/amd64" for current build', 1,
     "FROM --platform=linux/arm64 alpine AS arm64\n", {"base_platform": lambda image: "linux/arm64"}),
    ("RedundantTargetPlatform", "FROM --platform=$TARGETPLATFORM alpine\n",
     "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior", 1,
     "FROM --platform=$BUILDPLATFORM alpine\n", {}),
    ("SecretsUsedInArgOrEnv", "FROM alpine\nARG GITHUB_TOKEN\n",
     'Do not use ARG or ENV instructions for sensitive data (ARG "GITHUB_TOKEN")', 2,
     "FROM alpine\nARG PUBLIC_KEY\nENV TOKENIZER=x MONKEY=y\n", {}),
    ("InvalidDefaultArgInFrom", "ARG TAG\nFROM busybox:${TAG}\n",
     "Default value for ARG busybox:${TAG} results in empty or invalid base image name", 2,
     "ARG TAG=latest\nFROM busybox:${TAG}\n", {}),
    ("FromPlatformFlagConstDisallowed", "FROM --platform=linux/arm64 alpine AS build\n",
     'FROM --platform flag should not use constant value "linux/arm64"', 1,
     "FROM --platform=linux/arm64 alpine AS build-arm64\n", {}),
    ("CopyIgnoredFile", "# check=experimental=CopyIgnoredFile\nFROM alpine\nCOPY secret.txt /x\n",
     'Attempting to Copy file "secret.txt" that is excluded by .dockerignore', 3,
     "# check=experimental=CopyIgnoredFile\nFROM alpine\nCOPY app.txt /x\nCOPY --from=alpine secret.txt /y\n",
     {"ignore": lambda path: path == "secret.txt"}),
    ("InvalidDefinitionDescription",
     "# check=experimental=InvalidDefinitionDescription\n\n# a non-descriptive comment\nFROM alpine AS base\n",
     "Comment for FROM should follow the format: `# base <description>`", 4,
     "# check=experimental=InvalidDefinitionDescription\n\n# base is the base\nFROM alpine AS base\n"
     "# a comment\n\nARG X=1\n# VERSION the version\nARG VERSION\n", {}),
]


def test_every_rule_is_covered() -> None:
    assert len(RULES) == 20
    assert sorted(c[0] for c in CASES) == sorted(RULES)


@pytest.mark.parametrize(("rule", "bad", "message", "line", "good", "kw"), CASES, ids=[c[0] for c in CASES])
def test_rule_triggers(rule: str, bad: str, message: str, line: int, good: str, kw: dict[str, object]) -> None:
    w = _one(bad, rule, message, line, **kw)
    assert w.description == RULES[rule].description
    assert w.url == RULES[rule].url
    assert w.experimental == RULES[rule].experimental


@pytest.mark.parametrize(("rule", "bad", "message", "line", "good", "kw"), CASES, ids=[c[0] for c in CASES])
def test_rule_quiet(rule: str, bad: str, message: str, line: int, good: str, kw: dict[str, object]) -> None:
    assert _warnings(good, rule, **kw) == []


def test_rule_metadata() -> None:
    w = _one("FROM alpine AS Foo\n", "StageNameCasing", "Stage name 'Foo' should be lowercase", 1)
    assert w.url == "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"
    assert w.short() == "StageNameCasing: Stage name 'Foo' should be lowercase (line 1)"
    assert RULES["CopyIgnoredFile"].experimental and RULES["InvalidDefinitionDescription"].experimental
    assert RULES["InvalidBaseImagePlatform"].url == ""


def test_undefined_var_details() -> None:
    text = "FROM alpine\nARG A=1\nENV B=$A\nUSER $CUSER\nWORKDIR /$B\nCOPY --chown=$DOWNER a /\n"
    assert [(w.message, w.start_line) for w in _warnings(text, "UndefinedVar")] == [
        ("Usage of undefined variable '$CUSER'", 4), ("Usage of undefined variable '$DOWNER'", 6)]
    assert _warnings("FROM alpine\nENV X=$JAVA_HOME\n", "UndefinedVar",
                     base_env=lambda image: {"JAVA_HOME": "/opt/java"}) == []
    # ENV values in one instruction see the environment from before it
    assert len(_warnings("FROM alpine\nENV A=1 B=$A\n", "UndefinedVar")) == 1
    # build args give values to declared ARGs; stage env is inherited by child stages
    text = "FROM alpine AS base\nENV X=1\nFROM base\nCOPY $X /\n"
    assert _warnings(text, "UndefinedVar") == []


def test_multiple_instructions_reports_previous_location() -> None:
    text = 'FROM alpine\nHEALTHCHECK NONE\nENTRYPOINT ["a"]\nHEALTHCHECK CMD ["b"]\nENTRYPOINT ["c"]\n'
    assert [(w.message.split()[1], w.start_line) for w in _warnings(text, "MultipleInstructionsDisallowed")] == [
        ("HEALTHCHECK", 2), ("ENTRYPOINT", 3)]


def test_target_limits_dispatch_checks() -> None:
    text = "FROM alpine AS a\nWORKDIR rel\nFROM alpine AS b\nRUN true\n"
    assert len(_warnings(text, "WorkdirRelativePath")) == 1
    assert _warnings(text, "WorkdirRelativePath", target="b") == []
    assert len(_warnings(text, "WorkdirRelativePath", target="a")) == 1


# -- the check directive and BUILDKIT_DOCKERFILE_CHECK ------------------------------------------

BAD = "FROM alpine AS Builder\nMAINTAINER me\n"


def test_skip_rule() -> None:
    report = run_checks("# check=skip=StageNameCasing\n" + BAD)
    assert [w.rule for w in report.warnings] == ["MaintainerDeprecated"]
    assert not report.failed


def test_skip_all() -> None:
    report = run_checks("# check=skip=all\n" + BAD)
    assert report.warnings == [] and report.config.skip_all


def test_error_true_fails() -> None:
    report = run_checks("# check=error=true\n" + BAD)
    assert report.failed
    assert report.error_message() == "lint violation found for rules: StageNameCasing, MaintainerDeprecated"
    assert not run_checks("# check=error=true\nFROM alpine\n").failed


def test_experimental_enables_rule() -> None:
    text = "FROM alpine\nCOPY secret.txt /\n"
    ignore = {"ignore": lambda p: p == "secret.txt"}
    assert _warnings(text, "CopyIgnoredFile", **ignore) == []
    assert len(_warnings("# check=experimental=CopyIgnoredFile\n" + text, "CopyIgnoredFile", **ignore)) == 1
    assert len(_warnings("# check=skip=all;experimental=all\n" + text, "CopyIgnoredFile", **ignore)) == 1


def test_build_arg_overrides_directive() -> None:
    text = "# check=skip=all\n" + BAD
    report = run_checks(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=MaintainerDeprecated;error=true"})
    assert [w.rule for w in report.warnings] == ["StageNameCasing"]
    assert report.failed
    assert len(run_checks(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": ""}).warnings) == 2


def test_bad_directive_value() -> None:
    with pytest.raises(CheckConfigError, match='failed to parse check options: invalid check option "bogus"'):
        run_checks("# check=bogus=1\nFROM alpine\n")
    with pytest.raises(CheckConfigError, match="strconv.ParseBool"):
        run_checks("# check=error=maybe\nFROM alpine\n")
    with pytest.raises(CheckConfigError, match="build-arg:BUILDKIT_DOCKERFILE_CHECK"):
        run_checks("FROM alpine\n", build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip"})


def test_parse_check_config() -> None:
    cfg = parse_check_config(" skip = A, B ;error=1;experimental=all", None)
    assert cfg.skip == frozenset({"A", "B"}) and cfg.error and cfg.experimental_all
    assert parse_check_config(None, None) == parse_check_config("", None)


def test_parser_errors_propagate() -> None:
    with pytest.raises(DockerfileParseError):
        run_checks("# only a comment\n")


def test_invalid_instruction_stops_checking_quietly() -> None:
    report = run_checks("FROM alpine AS Foo\nBOGUS x\nMAINTAINER me\n")
    assert [w.rule for w in report.warnings] == ["StageNameCasing"]
