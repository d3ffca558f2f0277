"""Dockerfile build checks: BuildKit v0.20 / Dockerfile 1.14 linter (``frontend/dockerfile/linter``).

:func:`run_checks` parses a Dockerfile and reports the 20 rules of ``linter/ruleset.go`` with
BuildKit's messages and locations, in the order BuildKit emits them (parser warnings, instruction
parsing, stage validation, FROM expansion, base image platforms, then per-stage dispatch).
``# check=skip=…;error=…;experimental=…`` and the ``BUILDKIT_DOCKERFILE_CHECK`` build arg
configure it (:func:`parse_check_config`).
"""

from __future__ import annotations

import csv
import ntpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from workbench.frontend.dockerfile.parser import Node, ParseResult, must_parse_heredoc, parse, unknown_instruction
from workbench.frontend.dockerfile.shell import GO_SPACES, ShellExpansionError, ShellLex, go_quote
from workbench.frontend.dockerfile.suggest import search

__all__ = ["RULES", "CheckConfig", "CheckConfigError", "CheckError", "CheckReport", "CheckWarning", "Rule",
           "parse_check_config", "parse_lint_options", "run_checks"]

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


# -- helpers: platforms, references, suggestions ---------------------------------------------

_KNOWN_OS = frozenset({"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
                       "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"})
_KNOWN_ARCH = frozenset({"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
                         "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
                         "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm"})
_SPECIFIER = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class _Platform:
    os: str
    arch: str
    variant: str = ""

    def format(self) -> str:
        return "/".join(p for p in (self.os, self.arch, self.variant) if p)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd ``normalizeArch``."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8", "v8.0") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def _parse_platform(spec: str, default: _Platform | None = None) -> _Platform | None:
    """containerd ``platforms.Parse`` (normalized); None when it would fail."""
    parts = spec.split("/")
    if not 1 <= len(parts) <= 3 or not all(_SPECIFIER.fullmatch(p) for p in parts):
        return None
    os_ = parts[0].lower()
    if os_ == "macos":
        os_ = "darwin"
    dflt = default or _Platform("linux", "amd64")
    if len(parts) == 1:
        if os_ in _KNOWN_OS:
            return _Platform(os_, dflt.arch, dflt.variant)
        arch, variant = _normalize_arch(parts[0], "")
        return _Platform(dflt.os, arch, variant) if arch in _KNOWN_ARCH else None
    arch, variant = _normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return _Platform(os_, arch, variant)


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


def _valid_reference(name: str) -> bool:
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


def _suggest(value: str, options: list[str]) -> str:
    """``suggest.Search`` (case-sensitive): the closest option within distance 2, "" on an exact match."""
    return search(value, options)


_SECRETS = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)"
                      r"(?:_|$)")
_SECRETS_ALLOW = re.compile(r"(?i)(?:_|^)(?:public)(?:_|$)")
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_RESERVED_STAGE_NAMES = frozenset({"context", "scratch"})
_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")
_COMMANDS = frozenset({"arg", "cmd", "entrypoint", "env", "expose", "healthcheck", "label", "maintainer", "onbuild",
                       "run", "shell", "stopsignal", "user", "volume", "workdir"})
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE_LINE = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")
_DEFAULT_PATH = {"linux": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "windows": "c:\\Windows\\System32;c:\\Windows"}


def _cmd_name(original: str) -> str:
    """The instruction keyword as written (BuildKit keeps its casing in ``Node.Value``)."""
    return _WHITESPACE.split(original.strip(GO_SPACES), maxsplit=1)[0]


def _is_casing_consistent(s: str) -> bool:
    return s in (s.lower(), s.upper())


# -- stages -------------------------------------------------------------------------------------

class _Abort(Exception):
    """An instruction BuildKit rejects while parsing: checking stops, keeping the warnings so far."""

    def __init__(self, error: CheckError | None = None) -> None:
        super().__init__(error.message if error else "")
        self.error = error


class _Stop(Exception):
    """The conversion failed here (or the checks found its error first): the checks of later steps never run."""


def _parse_error(node: Node, message: str) -> _Abort:
    return _Abort(CheckError(f"dockerfile parse error on line {node.start_line}: {message}", node.start_line,
                             node.end_line))


# the flags instructions.Parse knows (BuildKit built with its dfrunsecurity, dfparents, dfexcludepatterns and
# dfrundevice tags); ARG, STOPSIGNAL and HEALTHCHECK are left out: their flags are not checked there
_FLAGS: dict[str, frozenset[str]] = {
    "add": frozenset({"chown", "chmod", "link", "keep-git-dir", "checksum", "exclude"}),
    "copy": frozenset({"from", "chown", "chmod", "link", "parents", "exclude"}),
    "run": frozenset({"mount", "network", "security", "device"}),
    "from": frozenset({"platform"}),
    **{k: frozenset() for k in ("cmd", "entrypoint", "env", "expose", "label", "maintainer", "onbuild", "shell",
                                "user", "volume", "workdir")},
}


def _check_flags(node: Node) -> None:
    """``BFlags.Parse``'s unknown flag error (``unknown flag: --name``, with a suggestion)."""
    known = _FLAGS.get(node.keyword)
    if known is None:
        return
    for flag in node.flags:
        name = flag.partition("=")[0][2:]
        if name not in known:
            suggestion = _suggest(name, sorted(known))
            raise _parse_error(node, f"unknown flag: --{name}" + (f" (did you mean {suggestion}?)" if suggestion
                                                                   else ""))


@dataclass
class _Cmd:
    node: Node
    name: str
    start: int
    end: int
    onbuild: bool = False


@dataclass
class _Stage:
    index: int
    node: Node
    orig_cmd: str
    base_name: str
    name: str
    platform: str | None
    commands: list[_Cmd] = field(default_factory=list)
    base: _Stage | None = None
    deps: set[int] = field(default_factory=set)
    expanded_base: str = ""
    os: str = "linux"
    dispatched: bool = False
    env: dict[str, str] = field(default_factory=dict)
    build_args: list[str] = field(default_factory=list)
    shell_set: bool = False
    workdir_set: bool = False


def _flag_values(node: Node, name: str) -> list[str]:
    out = []
    for f in node.flags:
        key, sep, value = f[2:].partition("=")
        if key == name and sep:
            out.append(value)
    return out


def _prev_comments(text: str, nodes: list[Node]) -> dict[int, list[str]]:
    """Comment lines directly preceding each instruction (``Node.PrevComment``), keyed by start line.

    A ``#`` line with no text, a blank line, or an instruction resets the list; parser directive
    lines are not comments.
    """
    lines = text.split("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    spans = {n.start_line: n.end_line for n in nodes}
    out: dict[int, list[str]] = {}
    comments: list[str] = []
    directives = True
    lineno = 1
    while lineno <= len(lines):
        if lineno in spans:
            out[lineno] = comments
            comments = []
            directives = False
            lineno = spans[lineno] + 1
            continue
        raw = lines[lineno - 1].rstrip("\r")
        lineno += 1
        stripped = raw.lstrip(GO_SPACES)
        m = _DIRECTIVE_LINE.fullmatch(stripped) if directives else None
        if m is not None and m.group(1).lower() in ("syntax", "escape", "check"):
            continue
        directives = False
        if stripped.startswith("#"):
            comment = raw[1:].strip(GO_SPACES)
            if comment:
                comments = comments + [comment]
            else:
                comments = []
        elif not stripped:
            comments = []
    return out


def _continuation_line(node: Node) -> int:
    """The last line of the instruction itself, before any heredoc bodies (the parser's ``currentLine``)."""
    line = node.end_line
    for doc in node.heredocs:
        line -= doc.content.count("\n") + 1
    return line


# -- the checker --------------------------------------------------------------------------------

class _Checker:
    def __init__(self, result: ParseResult, text: str, config: CheckConfig, build_args: dict[str, str],
                 target: str | None, all_stages: bool, ignore: Callable[[str], bool] | None,
                 base_platform: Callable[[str], str | None] | None,
                 base_env: Callable[[str], Mapping[str, str] | None] | None,
                 target_platform: _Platform, build_platform: _Platform,
                 base_shell: Callable[[str], bool] | None = None, stop: CheckError | None = None) -> None:
        self.result = result
        self.base_shell = base_shell
        self.stop = stop
        self.error: CheckError | None = None
        self.text = text
        self.config = config
        self.build_args = build_args
        self.target = target
        self.all_stages = all_stages
        self.ignore = ignore
        self.base_platform = base_platform
        self.base_env = base_env
        self.target_platform = target_platform
        self.build_platform = build_platform
        self.shlex = ShellLex(result.escape_token)
        self.warnings: list[CheckWarning] = []
        self.stages: list[_Stage] = []
        self.meta_args: list[Node] = []

    def warn(self, rule_name: str, message: str, start: int, end: int) -> None:
        rule = RULES[rule_name]
        if self.config.enabled(rule):
            self.warnings.append(CheckWarning(rule.name, rule.description, rule.url, message, start, end,
                                              rule.experimental))

    def warn_node(self, rule_name: str, message: str, node: Node) -> None:
        self.warn(rule_name, message, node.start_line, node.end_line)

    def fail(self, message: str, start: int, end: int) -> None:
        """The checks found an error BuildKit stops at (an expansion error): keep it and stop."""
        self.error = CheckError(message, start, end)
        raise _Stop

    # -- phase 1: parser warnings and instruction parsing -------------------------------------
    def empty_continuations(self) -> None:
        pending = list(self.result.warnings)
        for node in self.result.children:
            if pending and pending[0] == "Empty continuation line found in: " + node.original:
                pending.pop(0)
                line = _continuation_line(node)
                self.warn("NoEmptyContinuation", "Empty continuation line", line, line)

    def parse_instructions(self) -> None:
        comments = _prev_comments(self.text, self.result.children)
        stop = self.stop if self.stop is not None and self.stop.parse_phase else None
        for node in self.result.children:
            kw = node.keyword
            name = _cmd_name(node.original)
            if stop is not None and stop.start_line == node.start_line and kw != "from":
                raise _Abort(stop)
            if kw == "maintainer":
                self.warn_node("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label",
                               node)
            if kw == "from":
                self.parse_from(node, name, comments.get(node.start_line, []))
                if stop is not None and stop.start_line == node.start_line:
                    raise _Abort(stop)
                continue
            if kw == "arg":
                keys = [a.partition("=")[0] for a in node.args]
                if not keys:
                    raise _parse_error(node, "ARG requires at least one argument")
                self.definition_description("ARG", keys, comments.get(node.start_line, []), node)
                if not self.stages:
                    self.meta_args.append(node)
                    continue
            self.validate_command(node)
            self.stages[-1].commands.append(_Cmd(node, name, node.start_line, node.end_line))

    def validate_command(self, node: Node) -> None:
        """The errors of ``instructions.Parse`` the checks must stop at (the conversion may not reach the stage)."""
        kw = node.keyword
        unknown = unknown_instruction(node)
        if unknown is not None:
            raise _parse_error(node, unknown)
        if not self.stages:
            raise _Abort(CheckError("no build stage in current context", node.start_line, node.end_line))
        if kw in ("add", "copy") and len(node.args) < 2:
            raise _parse_error(node, f"{kw.upper()} requires at least two arguments, but only one was provided. "
                               "Destination could not be determined.")
        _check_flags(node)

    def parse_from(self, node: Node, name: str, comments: list[str]) -> None:
        args = node.args
        if len(args) == 3 and args[2] != args[2].lower():
            self.warn_node("StageNameCasing", f"Stage name '{args[2]}' should be lowercase", node)
        if len(args) >= 3 and _is_casing_consistent(name):
            as_ok = args[1] == (args[1].lower() if name == name.lower() else args[1].upper())
            if not as_ok:
                self.warn_node("FromAsCasing", f"'{args[1]}' and '{name}' keywords' casing do not match", node)
        stage_name = ""
        if len(args) == 3 and args[1].lower() == "as":
            stage_name = args[2].lower()
            if not _STAGE_NAME.fullmatch(stage_name):
                raise _parse_error(node, f"invalid name for build stage: {go_quote(args[2])}, name can't start "
                                   "with a number or contain symbols")
        elif len(args) != 1:
            raise _parse_error(node, "FROM requires either one or three arguments")
        platforms = _flag_values(node, "platform")
        _check_flags(node)
        if any(not f.startswith("--platform=") for f in node.flags):
            raise _parse_error(node, "missing a value on flag: platform")
        if stage_name:
            self.definition_description("FROM", [stage_name], comments, node)
        self.stages.append(_Stage(len(self.stages), node, name, args[0], stage_name,
                                  platforms[-1] if platforms else None))

    def definition_description(self, instruction: str, keys: list[str], comments: list[str], node: Node) -> None:
        if not comments or not keys:
            return
        if comments[-1].split(" ")[0] in keys:
            return
        example = keys[0] if len(keys) == 1 else "<arg_key>"
        self.warn_node("InvalidDefinitionDescription",
                       f"Comment for {instruction} should follow the format: `# {example} <description>`", node)

    # -- phase 2: stage-level validation --------------------------------------------------------
    def validate_stage_names(self) -> None:
        seen: set[str] = set()
        for st in self.stages:
            if not st.name:
                continue
            if st.name in _RESERVED_STAGE_NAMES:
                self.warn_node("ReservedStageName",
                               f"Stage name should not use the same name as reserved stage {go_quote(st.name)}",
                               st.node)
            if st.name in seen:
                self.warn_node("DuplicateStageName",
                               f"Duplicate stage name {go_quote(st.name)}, stage names should be unique", st.node)
            seen.add(st.name)

    def validate_casing(self) -> None:
        names = [(st.orig_cmd, st.node.start_line, st.node.end_line) for st in self.stages]
        for st in self.stages:
            names += [(c.name, c.start, c.end) for c in st.commands]
        lower = sum(1 for n, _, _ in names if _is_casing_consistent(n) and n == n.lower())
        upper = sum(1 for n, _, _ in names if _is_casing_consistent(n) and n != n.lower())
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

    # -- phase 3: global args and FROM ---------------------------------------------------------
    def default_args(self) -> dict[str, str]:
        bp, tp = self.build_platform, self.target_platform
        target_name = self.target if self.target is not None else self.stages[-1].name
        pairs = [("BUILDPLATFORM", bp.format()), ("BUILDOS", bp.os), ("BUILDOSVERSION", ""),
                 ("BUILDARCH", bp.arch), ("BUILDVARIANT", bp.variant), ("TARGETPLATFORM", tp.format()),
                 ("TARGETOS", tp.os), ("TARGETOSVERSION", ""), ("TARGETARCH", tp.arch),
                 ("TARGETVARIANT", tp.variant), ("TARGETSTAGE", target_name)]
        return {k: self.build_args.get(k, v) for k, v in pairs}

    def meta_arg_pairs(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for node in self.meta_args:
            for a in node.args:
                key, sep, value = a.partition("=")
                out.append((key, value if sep else None))
        return out

    def build_meta_args(self, args: dict[str, str], build_args: dict[str, str] | None) -> dict[str, str]:
        args = dict(args)
        for key, value in self.meta_arg_pairs():
            if build_args is not None and key in build_args:
                args[key] = build_args[key]
            elif value is not None:
                args[key] = self.shlex.process_word(value, args)
        return args

    def validate_default_base_images(self, defaults: dict[str, str]) -> None:
        try:
            args = self.build_meta_args(defaults, None)
            for st in self.stages:
                if not _valid_reference(self.shlex.process_word(st.base_name, args)):
                    self.warn_node("InvalidDefaultArgInFrom",
                                   f"Default value for ARG {st.base_name} results in empty or invalid base image name",
                                   st.node)
        except ShellExpansionError:  # BuildKit abandons this check; the real expansion reports the error
            return

    def from_args(self, global_args: dict[str, str]) -> None:
        declared = set(global_args) | {k for k, _ in self.meta_arg_pairs()}
        arg_keys = sorted(declared)
        by_name: dict[str, _Stage] = {}
        for st in self.stages:
            try:
                self.from_stage(st, global_args, declared, arg_keys, by_name)
            except ShellExpansionError as e:
                self.fail(str(e), st.node.start_line, st.node.end_line)
            if (self.stop is not None and self.stop.start_line == st.node.start_line
                    and not self.stop.message.startswith("failed to resolve source metadata")):
                raise _Stop

    def from_stage(self, st: _Stage, global_args: dict[str, str], declared: set[str], arg_keys: list[str],
                   by_name: dict[str, _Stage]) -> None:
        """One stage's FROM: its base and platform expanded with the global args (``toDispatchState``'s loop)."""
        res = self.shlex.process(st.base_name, global_args)
        self.undefined_from_args(res.unmatched, declared, arg_keys, st.node)
        st.expanded_base = res.result
        st.base = by_name.get(res.result)
        platform = st.base.os if st.base is not None else self.target_platform.os
        if st.platform is not None:
            pres = self.shlex.process(st.platform, global_args)
            self.undefined_from_args(pres.unmatched, declared, arg_keys, st.node)
            if (len(pres.matched) == 1 and not pres.unmatched and "TARGETPLATFORM" in pres.matched
                    and pres.result == global_args.get("TARGETPLATFORM")):
                self.warn_node("RedundantTargetPlatform",
                               f"Setting platform to predefined {st.platform} in FROM is redundant as this is the "
                               "default behavior", st.node)
            if not pres.matched and not pres.unmatched:
                p = _parse_platform(pres.result, self.target_platform)
                if p is not None and p.os not in st.name and p.arch not in st.name:
                    self.warn_node("FromPlatformFlagConstDisallowed",
                                   f"FROM --platform flag should not use constant value {go_quote(pres.result)}",
                                   st.node)
            parsed = _parse_platform(pres.result, self.target_platform) if pres.result else None
            if parsed is not None:
                platform = parsed.os
        st.os = platform
        if st.name:
            by_name[st.name] = st

    def undefined_from_args(self, unmatched: set[str], declared: set[str], keys: list[str], node: Node) -> None:
        for arg in sorted(unmatched):
            if arg in declared:
                continue
            msg = f"FROM argument '{arg}' is not declared"
            suggestion = _suggest(arg, keys)
            if suggestion:
                msg += f" (did you mean {suggestion}?)"
            self.warn_node("UndefinedArgInFrom", msg, node)

    # -- phase 4: reachability and base images ------------------------------------------------
    def stage_by_name(self, ref: str) -> _Stage | None:
        """``dispatchStates.findStateByName``: the last stage of that name, wherever it is."""
        found = [st for st in self.stages if st.name and st.name == ref.lower()]
        return found[-1] if found else None

    def collect_deps(self) -> None:
        """Each stage's ``COPY --from`` (a name, else a stage index) and ``RUN --mount=from=`` (a name) stages."""
        for st in self.stages:
            for cmd in st.commands:
                node = cmd.node
                deps: list[_Stage | None] = []
                if node.keyword == "copy":
                    for ref in _flag_values(node, "from")[-1:]:
                        if ref.isdigit():
                            deps.append(self.stages[int(ref)] if int(ref) < len(self.stages) else None)
                        else:
                            deps.append(self.stage_by_name(ref))
                if node.keyword == "run":
                    for spec in _flag_values(node, "mount"):
                        for fld in _csv_fields(spec):
                            k, sep, v = fld.partition("=")
                            if sep and k.strip().lower() == "from":
                                deps.append(self.stage_by_name(v))
                st.deps.update(dep.index for dep in deps if dep is not None and dep is not st)

    def reachable(self) -> set[int]:
        if self.all_stages:
            return {st.index for st in self.stages}
        target = self.stages[-1]
        if self.target is not None:
            target = self.stage_by_name(self.target) or target
        seen: set[int] = set()
        todo = [target]
        while todo:
            st = todo.pop()
            if st.index in seen:
                continue
            seen.add(st.index)
            if st.base is not None:
                todo.append(st.base)
            todo.extend(self.stages[i] for i in st.deps)
        return seen

    def base_platforms(self, reachable: set[int], global_args: dict[str, str]) -> None:
        if self.base_platform is None:
            return
        for st in self.stages:
            if st.index not in reachable or st.base is not None or st.expanded_base == "scratch":
                continue
            expected = self.target_platform
            if st.platform is not None:
                expected = _parse_platform(self.shlex.process_word(st.platform, global_args),
                                           self.target_platform) or expected
            actual_str = self.base_platform(st.expanded_base)
            actual = _parse_platform(actual_str, self.target_platform) if actual_str else None
            if actual is None:
                continue
            if actual.os != expected.os or actual.arch != expected.arch:
                self.warn_node("InvalidBaseImagePlatform",
                               f"Base image {st.expanded_base} was pulled with platform {go_quote(actual.format())}, "
                               f"expected {go_quote(expected.format())} for current build", st.node)

    # -- phase 5: dispatch ----------------------------------------------------------------------
    def init_stage(self, st: _Stage) -> None:
        if st.base is not None:
            base = st.base
            st.env = dict(base.env)
            st.build_args = list(base.build_args)
            st.shell_set = base.shell_set
            st.workdir_set = base.workdir_set
            st.os = base.os
            triggers = []
            for c in base.commands:
                nested = c.node.next_node
                if c.node.keyword == "onbuild" and nested is not None:
                    triggers.append(_Cmd(nested, _cmd_name(nested.original), st.node.start_line, st.node.end_line,
                                         True))
            st.commands = triggers + st.commands
            return
        env: dict[str, str] = {}
        if self.base_env is not None and st.expanded_base != "scratch":
            env.update(self.base_env(st.expanded_base) or {})
        if self.base_shell is not None and st.expanded_base != "scratch":
            st.shell_set = self.base_shell(st.expanded_base)  # CMD/ENTRYPOINT use the image's SHELL
        if "PATH" not in env:
            env["PATH"] = _DEFAULT_PATH.get(st.os, _DEFAULT_PATH["linux"])
        st.env = env

    def expand(self, st: _Stage, cmd: _Cmd, word: str, lex: ShellLex | None = None) -> str:
        res = (lex or self.shlex).process(word, st.env)
        self.report_unmatched(st, cmd, res.unmatched)
        return res.result

    def report_unmatched(self, st: _Stage, cmd: _Cmd, unmatched: set[str]) -> None:
        names = sorted(unmatched - set(st.build_args) - _NON_ENV_ARGS)
        options = list(st.env)
        for name in names:
            msg = f"Usage of undefined variable '${name}'"
            suggestion = _suggest(name, options)
            if suggestion:
                msg += f" (did you mean ${suggestion}?)"
            self.warn("UndefinedVar", msg, cmd.start, cmd.end)

    def dispatch(self, st: _Stage, global_args: dict[str, str]) -> None:
        self.init_stage(st)
        trackers: dict[str, _Cmd] = {}
        for cmd in st.commands:
            if self.stop is not None and self.stop.start_line == cmd.start and not cmd.onbuild:
                raise _Stop
            kw = cmd.node.keyword
            handler = getattr(self, "do_" + kw, None)
            if kw in ("cmd", "entrypoint", "healthcheck"):
                prev = trackers.get(kw)
                if prev is not None:
                    self.warn("MultipleInstructionsDisallowed",
                              f"Multiple {cmd.name} instructions should not be used in the same stage because only "
                              "the last one will be used", prev.start, prev.end)
                trackers[kw] = cmd
            if handler is not None:
                try:
                    handler(st, cmd, global_args)
                except ShellExpansionError as e:
                    self.fail(str(e), cmd.start, cmd.end)
        st.dispatched = True

    def do_env(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        args = cmd.node.args
        pairs = [(self.expand(st, cmd, args[i]), self.expand(st, cmd, args[i + 1]), args[i + 2] == "")
                 for i in range(0, len(args) - 2, 3)]
        for key, value, legacy in pairs:
            if legacy:
                self.legacy(cmd)
            self.secret("ENV", key, cmd)
            st.env[key] = value

    def do_label(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        args = cmd.node.args
        for i in range(0, len(args) - 2, 3):
            self.expand(st, cmd, args[i])
            self.expand(st, cmd, args[i + 1])
        for i in range(0, len(args) - 2, 3):
            if args[i + 2] == "":
                self.legacy(cmd)

    def legacy(self, cmd: _Cmd) -> None:
        self.warn("LegacyKeyValueFormat",
                  f'"{cmd.name} key=value" should be used instead of legacy "{cmd.name} key value" format',
                  cmd.start, cmd.end)

    def secret(self, instruction: str, key: str, cmd: _Cmd) -> None:
        if _SECRETS.search(key) and not _SECRETS_ALLOW.search(key):
            self.warn("SecretsUsedInArgOrEnv",
                      f"Do not use ARG or ENV instructions for sensitive data ({instruction} {go_quote(key)})",
                      cmd.start, cmd.end)

    def do_arg(self, st: _Stage, cmd: _Cmd, global_args: dict[str, str]) -> None:
        for a in cmd.node.args:
            key, sep, default = a.partition("=")
            self.secret("ARG", key, cmd)
            value: str | None = default if sep else None
            if key in self.build_args:
                value = self.build_args[key]
            elif value is not None:
                value = self.expand(st, cmd, value)
            elif key in global_args:
                value = global_args[key]
            if value is not None and key not in _NON_ENV_ARGS:
                st.env[key] = value
            st.build_args.append(key)

    def do_workdir(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        path = self.expand(st, cmd, cmd.node.args[0] if cmd.node.args else "")
        absolute = ntpath.isabs(path) or path.startswith("/") if st.os == "windows" else path.startswith("/")
        if not st.workdir_set and not absolute:
            self.warn("WorkdirRelativePath",
                      f"Relative workdir {go_quote(path)} can have unexpected results if the base image changes",
                      cmd.start, cmd.end)
        st.workdir_set = True

    def do_user(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        for word in cmd.node.args:
            self.expand(st, cmd, word)

    do_stopsignal = do_user
    do_volume = do_user

    def do_shell(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        st.shell_set = bool(cmd.node.args)

    def json_args(self, st: _Stage, cmd: _Cmd) -> None:
        if not cmd.node.json_form and not st.shell_set:
            self.warn("JSONArgsRecommended",
                      f"JSON arguments recommended for {cmd.name} to prevent unintended behavior related to OS signals",
                      cmd.start, cmd.end)

    def do_cmd(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        self.json_args(st, cmd)

    def do_entrypoint(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        self.json_args(st, cmd)

    def do_run(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        for spec in _flag_values(cmd.node, "mount"):
            for fld in _csv_fields(spec):
                value = fld.partition("=")
                if value[1]:
                    self.expand(st, cmd, value[2])

    def do_copy(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        self.copy_like(st, cmd, add=False)

    def do_add(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        self.copy_like(st, cmd, add=True)

    def copy_like(self, st: _Stage, cmd: _Cmd, add: bool) -> None:
        node = cmd.node
        for flag in ("chown", "chmod", "checksum") if add else ("chown", "chmod"):
            values = _flag_values(node, flag)
            self.expand(st, cmd, values[-1] if values else "")
        heredocs = {d.name: d for d in node.heredocs}
        sources: list[str] = []
        contents = []
        for word in node.args[:-1]:
            doc = must_parse_heredoc(word) if not node.json_form and "<<" in word else None
            if doc is not None and doc.name in heredocs:
                contents.append(heredocs[doc.name])
            else:
                sources.append(word)
        expanded = [self.expand(st, cmd, s) for s in sources]
        self.expand(st, cmd, node.args[-1])
        raw = ShellLex("\\", skip_process_quotes=True)
        for doc in contents:
            if doc.expand:
                self.expand(st, cmd, doc.content, raw)
        if self.ignore is None or (not add and _flag_values(node, "from")):
            return
        for src in expanded:
            if add and (src.startswith(("http://", "https://")) or _is_git_url(src)):
                continue
            if self.ignore(src):
                self.warn("CopyIgnoredFile",
                          f"Attempting to {'Add' if add else 'Copy'} file {go_quote(src)} that is excluded by "
                          ".dockerignore", cmd.start, cmd.end)

    # -- driver ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Every phase in BuildKit's order, up to the first error (the checks' own, or the conversion's)."""
        self.empty_continuations()
        try:
            self.parse_instructions()
        except _Abort as e:
            self.error = e.error
            return
        if not self.stages:
            return
        try:
            self.validate_stage_names()
            self.validate_casing()
            defaults = self.default_args()
            self.validate_default_base_images(defaults)
            try:
                global_args = self.build_meta_args(defaults, self.build_args)
            except ShellExpansionError as e:
                self.fail(str(e), 0, 0)
            self.from_args(global_args)
            if self.stop is not None and (not self.stop.start_line
                                          or self.stop.message.startswith("failed to resolve source metadata")):
                return  # the target or a base image: BuildKit fails before any step is dispatched
            self.collect_deps()
            reachable = self.reachable()
            self.base_platforms(reachable, global_args)
            for st in self.stages:
                if st.index in reachable:
                    self.dispatch(st, global_args)
        except _Stop:
            return


def _csv_fields(spec: str) -> list[str]:
    try:
        return next(csv.reader([spec]), [])
    except csv.Error:
        return spec.split(",")


_GIT_URL = re.compile(r"^(?:git@|git://|ssh://|github\.com/)|\.git(?:[#?].*)?$")


def _is_git_url(src: str) -> bool:
    return bool(_GIT_URL.search(src))


def run_checks(text: str, *, build_args: dict[str, str] | None = None, target: str | None = None,
               ignore: Callable[[str], bool] | None = None,
               base_platform: Callable[[str], str | None] | None = None,
               target_platform: str = "linux/amd64",
               build_platform: str | None = None,
               base_env: Callable[[str], Mapping[str, str] | None] | None = None,
               all_stages: bool | None = None, base_shell: Callable[[str], bool] | None = None,
               error: CheckError | None = None) -> CheckReport:
    """Lint ``text`` as BuildKit v0.20 does; parser and lexer errors propagate, a bad config raises CheckConfigError.

    ``ignore(path)`` answers whether a context path is excluded by .dockerignore (CopyIgnoredFile);
    ``base_platform(image)`` gives an image's ``os/arch[/variant]`` (InvalidBaseImagePlatform);
    ``base_env(image)`` gives its config env (UndefinedVar), ``base_shell(image)`` whether its config sets a
    SHELL (JSONArgsRecommended). ``all_stages`` defaults to ``target is None`` (``docker build --check`` lints
    every stage; a build only reachable ones). ``error`` is the conversion's error, if it failed: the checks
    stop where BuildKit's would and the report carries it (or an earlier error the checks found themselves).
    """
    build_args = dict(build_args or {})
    result = parse(text)
    config = parse_check_config(result.directives.get("check"), build_args.get(BUILD_ARG_KEY))
    tp = _parse_platform(target_platform) or _Platform("linux", "amd64")
    bp = _parse_platform(build_platform, tp) if build_platform else None
    checker = _Checker(result, text, config, build_args, target, target is None if all_stages is None else all_stages,
                       ignore, base_platform, base_env, tp, bp or tp, base_shell, error)
    checker.run()
    found = checker.error
    if found is not None and error is not None and (found.start_line == error.start_line or not found.start_line):
        found = error  # the same failure: the conversion's words for it
    return CheckReport(checker.warnings, config, found or error)
