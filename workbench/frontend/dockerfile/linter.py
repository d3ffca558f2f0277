"""BuildKit v0.20's linter (Dockerfile 1.14, ``frontend/dockerfile/linter``): the rules, their configuration and report.

:class:`Linter` holds each rule's check with BuildKit's message and location; a dispatch of the Dockerfile
calls it at each point BuildKit's does. ``# check=skip=…;error=…;experimental=…`` and the
``BUILDKIT_DOCKERFILE_CHECK`` build arg configure it (:func:`parse_check_config`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from workbench.frontend.dockerfile.parser import Node
from workbench.frontend.dockerfile.platforms import Platform, parse_platform
from workbench.frontend.dockerfile.shell import go_quote
from workbench.frontend.dockerfile.suggest import search

BUILD_ARG_KEY = "BUILDKIT_DOCKERFILE_CHECK"
_URL = "https://docs.docker.com/go/dockerfile/rule/"


@dataclass(frozen=True)
class Rule:
    """One linter rule (``linter.LinterRule``)."""

    name: str
    description: str
    url: str
    experimental: bool = False


def _rule(name: str, slug: str, description: str, experimental: bool = False) -> Rule:
    return Rule(name, description, _URL + slug + "/" if slug else "", experimental)


RULES: dict[str, Rule] = {r.name: r for r in (
    _rule("StageNameCasing", "stage-name-casing", "Stage names should be lowercase"),
    _rule("FromAsCasing", "from-as-casing", "The 'as' keyword should match the case of the 'from' keyword"),
    _rule("NoEmptyContinuation", "no-empty-continuation",
          "Empty continuation lines will become errors in a future release"),
    _rule("ConsistentInstructionCasing", "consistent-instruction-casing",
          "All commands within the Dockerfile should use the same casing (either upper or lower)"),
    _rule("DuplicateStageName", "duplicate-stage-name", "Stage names should be unique"),
    _rule("ReservedStageName", "reserved-stage-name", "Reserved words should not be used as stage names"),
    _rule("JSONArgsRecommended", "json-args-recommended",
          "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"),
    _rule("MaintainerDeprecated", "maintainer-deprecated",
          "The MAINTAINER instruction is deprecated, use a label instead to define an image author"),
    _rule("UndefinedArgInFrom", "undefined-arg-in-from", "FROM command must use declared ARGs"),
    _rule("WorkdirRelativePath", "workdir-relative-path",
          "Relative workdir without an absolute workdir declared within the build can have unexpected results "
          "if the base image changes"),
    _rule("UndefinedVar", "undefined-var", "Variables should be defined before their use"),
    _rule("MultipleInstructionsDisallowed", "multiple-instructions-disallowed",
          "Multiple instructions of the same type should not be used in the same stage"),
    _rule("LegacyKeyValueFormat", "legacy-key-value-format",
          "Legacy key/value format with whitespace separator should not be used"),
    _rule("InvalidBaseImagePlatform", "", "Base image platform does not match expected target platform"),
    _rule("RedundantTargetPlatform", "redundant-target-platform",
          "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
    _rule("SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env",
          "Sensitive data should not be used in the ARG or ENV commands"),
    _rule("InvalidDefaultArgInFrom", "invalid-default-arg-in-from",
          "Default value for global ARG results in an empty or invalid base image name"),
    _rule("FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed",
          "FROM --platform flag should not use a constant value"),
    _rule("CopyIgnoredFile", "copy-ignored-file", "Attempting to Copy file that is excluded by .dockerignore", True),
    _rule("InvalidDefinitionDescription", "invalid-definition-description",
          "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this "
          "is not intended to be a description comment, add an empty line or comment between the instruction and the "
          "comment.", True),
)}


@dataclass(frozen=True)
class CheckWarning:
    """One reported violation; lines are 1-based and inclusive."""

    rule: str
    description: str
    url: str
    message: str
    start_line: int
    end_line: int
    experimental: bool = False

    def short(self) -> str:
        """BuildKit's one-line form (``linter.LintFormatShort``): ``Rule: message (line N)``."""
        msg = f"{self.rule}: {self.message}"
        return f"{msg} (line {self.start_line})" if self.start_line > 0 else msg


@dataclass
class CheckConfig:
    """Parsed ``check`` options (``linter.Config``)."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False

    def enabled(self, rule: Rule) -> bool:
        """Whether ``rule`` runs (``Linter.Run``): experimental rules only when listed, skip does not apply to them."""
        if rule.experimental:
            return self.experimental_all or rule.name in self.experimental
        return not (self.skip_all or rule.name in self.skip)


class CheckConfigError(ValueError):
    """An invalid ``check`` directive or ``BUILDKIT_DOCKERFILE_CHECK`` value."""


@dataclass(frozen=True)
class CheckError:
    """The error that ended the checks, as BuildKit's ``lint.BuildError``: its text and lines (0 when it has none)."""

    message: str
    start_line: int = 0
    end_line: int = 0

    @property
    def parse_phase(self) -> bool:
        """Whether the error is one of ``instructions.Parse`` (the checks of later lines never ran)."""
        return self.message.startswith("dockerfile parse error on line ")


@dataclass
class CheckReport:
    """Warnings in emission order, the configuration that produced them, and the error that stopped them (if any)."""

    warnings: list[CheckWarning]
    config: CheckConfig
    error: CheckError | None = None

    @property
    def failed(self) -> bool:
        """``error=true`` and at least one warning (BuildKit then fails the build)."""
        return self.config.error and bool(self.warnings)

    def error_message(self) -> str:
        """BuildKit's error text when :attr:`failed` (rules in first-seen order)."""
        rules = list(dict.fromkeys(w.rule for w in self.warnings))
        return "lint violation found for rules: " + ", ".join(rules)


# -- configuration ------------------------------------------------------------------------------

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _rule_list(value: str) -> frozenset[str]:
    return frozenset(r.strip() for r in value.split(","))


def parse_lint_options(text: str) -> CheckConfig:
    """``linter.ParseLintOptions``: ``skip=<rules|all>;error=<bool>;experimental=<rules|all>``."""
    text = text.strip()
    cfg = CheckConfig()
    if not text:
        return cfg
    for part in text.split(";", 2):
        key, sep, value = part.partition("=")
        if not sep:
            raise CheckConfigError(f"invalid check option {go_quote(part)}")
        key = key.strip()
        if key == "skip":
            value = value.strip()
            if value == "all":
                cfg.skip_all = True
            else:
                cfg.skip = _rule_list(value)
        elif key == "experimental":
            value = value.strip()
            if value == "all":
                cfg.experimental_all = True
            else:
                cfg.experimental = _rule_list(value)
        elif key == "error":
            value = value.strip()
            if value not in _GO_TRUE and value not in _GO_FALSE:
                raise CheckConfigError(f"failed to parse check option {go_quote(part)}: strconv.ParseBool: "
                                       f"parsing {go_quote(value)}: invalid syntax")
            cfg.error = value in _GO_TRUE
        else:
            raise CheckConfigError(f"invalid check option {go_quote(key)}")
    return cfg


def parse_check_config(directive: str | None, build_arg: str | None) -> CheckConfig:
    """The effective config: the build arg, when given (even empty), replaces the directive wholesale."""
    if build_arg is not None:
        try:
            return parse_lint_options(build_arg)
        except CheckConfigError as e:
            raise CheckConfigError(f"failed to parse build-arg:{BUILD_ARG_KEY}: {e}") from None
    try:
        return parse_lint_options(directive or "")
    except CheckConfigError as e:
        raise CheckConfigError(f"failed to parse check options: {e}") from None


# -- rule helpers ------------------------------------------------------------------------------

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE = re.compile(rf"({_NAME})(?::([\w][\w.-]{{0,127}}))?"
                        r"(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?")
_HEX64 = re.compile(r"[a-f0-9]{64}")
_DIGEST_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


def valid_reference(name: str) -> bool:
    """Whether distribution's ``reference.ParseNormalizedNamed`` accepts ``name``."""
    if _HEX64.fullmatch(name):
        return False
    i = name.find("/")
    if i == -1 or (not any(c in name[:i] for c in ".:") and name[:i] != "localhost"
                   and name[:i].lower() == name[:i]):
        domain, remainder = "docker.io", name
    else:
        domain, remainder = name[:i], name[i + 1:]
    if domain == "docker.io" and "/" not in remainder:
        remainder = "library/" + remainder
    if remainder.lower() != remainder:
        return False
    m = _REFERENCE.fullmatch(domain + "/" + remainder)
    if m is None or len(m.group(1)) > 255:
        return False
    if m.group(3):
        algo, _, hexpart = m.group(3).partition(":")
        if _DIGEST_LEN.get(algo) != len(hexpart) or hexpart.lower() != hexpart:
            return False
    return True



_SECRETS = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)"
                      r"(?:_|$)")
_SECRETS_ALLOW = re.compile(r"(?i)(?:_|^)(?:public)(?:_|$)")
_RESERVED_STAGE_NAMES = frozenset({"context", "scratch"})


def is_casing_consistent(s: str) -> bool:
    return s in (s.lower(), s.upper())



class Linter:
    """BuildKit's ``linter.Linter``: each rule's check, worded and located as BuildKit's; a warning is kept
    (in ``warnings``, in emission order) only when the config enables its rule."""

    def __init__(self, config: CheckConfig) -> None:
        self.config = config
        self.warnings: list[CheckWarning] = []

    def warn(self, rule_name: str, message: str, start: int, end: int) -> None:
        rule = RULES[rule_name]
        if self.config.enabled(rule):
            self.warnings.append(CheckWarning(rule.name, rule.description, rule.url, message, start, end,
                                              rule.experimental))

    def warn_node(self, rule_name: str, message: str, node: Node) -> None:
        self.warn(rule_name, message, node.start_line, node.end_line)

    # -- the parser and instructions.Parse --------------------------------------------------------
    def empty_continuation(self, line: int) -> None:
        self.warn("NoEmptyContinuation", "Empty continuation line", line, line)

    def maintainer(self, node: Node) -> None:
        self.warn_node("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label", node)

    def from_casing(self, node: Node, keyword: str) -> None:
        """StageNameCasing and FromAsCasing of a FROM written with ``keyword``."""
        args = node.args
        if len(args) == 3 and args[2] != args[2].lower():
            self.warn_node("StageNameCasing", f"Stage name '{args[2]}' should be lowercase", node)
        if len(args) >= 3 and is_casing_consistent(keyword):
            as_ok = args[1] == (args[1].lower() if keyword == keyword.lower() else args[1].upper())
            if not as_ok:
                self.warn_node("FromAsCasing", f"'{args[1]}' and '{keyword}' keywords' casing do not match", node)

    def definition_description(self, instruction: str, keys: list[str], comments: list[str], node: Node) -> None:
        if not comments or not keys:
            return
        if comments[-1].split(" ")[0] in keys:
            return
        example = keys[0] if len(keys) == 1 else "<arg_key>"
        self.warn_node("InvalidDefinitionDescription",
                       f"Comment for {instruction} should follow the format: `# {example} <description>`", node)

    # -- stages -----------------------------------------------------------------------------------
    def stage_names(self, stages: Iterable[tuple[str, Node]]) -> None:
        """ReservedStageName and DuplicateStageName over the (name, FROM node) of every stage."""
        seen: set[str] = set()
        for name, node in stages:
            if not name:
                continue
            if name in _RESERVED_STAGE_NAMES:
                self.warn_node("ReservedStageName",
                               f"Stage name should not use the same name as reserved stage {go_quote(name)}", node)
            if name in seen:
                self.warn_node("DuplicateStageName",
                               f"Duplicate stage name {go_quote(name)}, stage names should be unique", node)
            seen.add(name)

    def instruction_casing(self, names: list[tuple[str, int, int]]) -> None:
        """ConsistentInstructionCasing over every (keyword as written, start, end), FROMs first."""
        lower = sum(1 for n, _, _ in names if is_casing_consistent(n) and n == n.lower())
        upper = sum(1 for n, _, _ in names if is_casing_consistent(n) and n != n.lower())
        majority_lower = lower > upper
        for name, start, end in names:
            if majority_lower and name.lower() != name:
                casing = "lowercase"
            elif not majority_lower and name.upper() != name:
                casing = "uppercase"
            else:
                continue
            self.warn("ConsistentInstructionCasing",
                      f"Command '{name}' should match the case of the command majority ({casing})", start, end)

    def default_base_image(self, base_name: str, expanded: str, node: Node) -> None:
        if not valid_reference(expanded):
            self.warn_node("InvalidDefaultArgInFrom",
                           f"Default value for ARG {base_name} results in empty or invalid base image name", node)

    def undefined_from_args(self, unmatched: set[str], declared: set[str], keys: list[str], node: Node) -> None:
        for arg in sorted(unmatched):
            if arg in declared:
                continue
            msg = f"FROM argument '{arg}' is not declared"
            suggestion = search(arg, keys)
            if suggestion:
                msg += f" (did you mean {suggestion}?)"
            self.warn_node("UndefinedArgInFrom", msg, node)

    def from_platform(self, written: str, result: str, matched: set[str], unmatched: set[str],
                      target_platform: str, stage_name: str, default: Platform, node: Node) -> None:
        """RedundantTargetPlatform and FromPlatformFlagConstDisallowed of ``FROM --platform=written``."""
        if (len(matched) == 1 and not unmatched and "TARGETPLATFORM" in matched
                and result == target_platform):
            self.warn_node("RedundantTargetPlatform",
                           f"Setting platform to predefined {written} in FROM is redundant as this is the "
                           "default behavior", node)
        if not matched and not unmatched:
            p = parse_platform(result, default)
            if p is not None and p.os not in stage_name and p.arch not in stage_name:
                self.warn_node("FromPlatformFlagConstDisallowed",
                               f"FROM --platform flag should not use constant value {go_quote(result)}", node)

    def base_image_platform(self, image: str, actual: Platform, expected: Platform, node: Node) -> None:
        if actual.os != expected.os or actual.arch != expected.arch:
            self.warn_node("InvalidBaseImagePlatform",
                           f"Base image {image} was pulled with platform {go_quote(actual.format())}, "
                           f"expected {go_quote(expected.format())} for current build", node)

    # -- dispatch ---------------------------------------------------------------------------------
    def undefined_vars(self, names: list[str], options: list[str], start: int, end: int) -> None:
        for name in names:
            msg = f"Usage of undefined variable '${name}'"
            suggestion = search(name, options)
            if suggestion:
                msg += f" (did you mean ${suggestion}?)"
            self.warn("UndefinedVar", msg, start, end)

    def multiple_instructions(self, name: str, start: int, end: int) -> None:
        """An earlier CMD/ENTRYPOINT/HEALTHCHECK (at start-end) that a later one of the stage replaces."""
        self.warn("MultipleInstructionsDisallowed",
                  f"Multiple {name} instructions should not be used in the same stage because only the last one "
                  "will be used", start, end)

    def legacy_key_value(self, name: str, start: int, end: int) -> None:
        self.warn("LegacyKeyValueFormat",
                  f'"{name} key=value" should be used instead of legacy "{name} key value" format', start, end)

    def secret(self, instruction: str, key: str, start: int, end: int) -> None:
        if _SECRETS.search(key) and not _SECRETS_ALLOW.search(key):
            self.warn("SecretsUsedInArgOrEnv",
                      f"Do not use ARG or ENV instructions for sensitive data ({instruction} {go_quote(key)})",
                      start, end)

    def workdir_relative(self, path: str, start: int, end: int) -> None:
        self.warn("WorkdirRelativePath",
                  f"Relative workdir {go_quote(path)} can have unexpected results if the base image changes",
                  start, end)

    def json_args(self, name: str, start: int, end: int) -> None:
        self.warn("JSONArgsRecommended",
                  f"JSON arguments recommended for {name} to prevent unintended behavior related to OS signals",
                  start, end)

    def copy_ignored(self, add: bool, src: str, start: int, end: int) -> None:
        self.warn("CopyIgnoredFile",
                  f"Attempting to {'Add' if add else 'Copy'} file {go_quote(src)} that is excluded by .dockerignore",
                  start, end)
