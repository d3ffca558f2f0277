"""Dockerfile build checks: BuildKit v0.20's lint pass over a Dockerfile (``dockerfile2llb``'s ``toDispatchState``).

:func:`run_checks` parses a Dockerfile and walks it as BuildKit's lint does (parser warnings, instruction
parsing, stage validation, FROM expansion, base image platforms, then per-stage dispatch), calling the
:class:`~workbench.frontend.dockerfile.linter.Linter` at each point BuildKit's calls its linter.
"""

from __future__ import annotations

import csv
import ntpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from workbench.frontend.dockerfile.buildargs import NON_ENV_ARGS, automatic_args
from workbench.frontend.dockerfile.linter import (
    BUILD_ARG_KEY,
    CheckConfig,
    CheckError,
    CheckReport,
    Linter,
    parse_check_config,
)
from workbench.frontend.dockerfile.parser import (
    Node,
    ParseResult,
    argument_count_error,
    must_parse_heredoc,
    parse,
    unknown_instruction,
)
from workbench.frontend.dockerfile.platforms import Platform, parse_platform
from workbench.frontend.dockerfile.shell import GO_SPACES, ShellExpansionError, ShellLex, go_quote
from workbench.frontend.dockerfile.suggest import search

__all__ = ["run_checks"]


_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE_LINE = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")
_DEFAULT_PATH = {"linux": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "windows": "c:\\Windows\\System32;c:\\Windows"}


def _cmd_name(original: str) -> str:
    """The instruction keyword as written (BuildKit keeps its casing in ``Node.Value``)."""
    return _WHITESPACE.split(original.strip(GO_SPACES), maxsplit=1)[0]



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
            suggestion = search(name, sorted(known))
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
                 target_platform: Platform, build_platform: Platform,
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
        self.lint = Linter(config)
        self.stages: list[_Stage] = []
        self.meta_args: list[Node] = []

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
                self.lint.empty_continuation(line)

    def parse_instructions(self) -> None:
        comments = _prev_comments(self.text, self.result.children)
        stop = self.stop if self.stop is not None and self.stop.parse_phase else None
        for node in self.result.children:
            kw = node.keyword
            name = _cmd_name(node.original)
            if stop is not None and stop.start_line == node.start_line and kw != "from":
                raise _Abort(stop)
            if kw == "maintainer":
                self.lint.maintainer(node)
            if kw == "from":
                self.parse_from(node, name, comments.get(node.start_line, []))
                if stop is not None and stop.start_line == node.start_line:
                    raise _Abort(stop)
                continue
            if kw == "arg":
                keys = [a.partition("=")[0] for a in node.args]
                if not keys:
                    raise _parse_error(node, "ARG requires at least one argument")
                self.lint.definition_description("ARG", keys, comments.get(node.start_line, []), node)
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
        count_error = argument_count_error(node)
        if count_error is not None:
            raise _parse_error(node, count_error)
        if not self.stages:
            raise _Abort(CheckError("no build stage in current context", node.start_line, node.end_line))
        if kw in ("add", "copy") and len(node.args) < 2:
            raise _parse_error(node, f"{kw.upper()} requires at least two arguments, but only one was provided. "
                               "Destination could not be determined.")
        _check_flags(node)

    def parse_from(self, node: Node, name: str, comments: list[str]) -> None:
        args = node.args
        self.lint.from_casing(node, name)
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
            self.lint.definition_description("FROM", [stage_name], comments, node)
        self.stages.append(_Stage(len(self.stages), node, name, args[0], stage_name,
                                  platforms[-1] if platforms else None))

    # -- phase 2: stage-level validation --------------------------------------------------------
    def validate_stage_names(self) -> None:
        self.lint.stage_names((st.name, st.node) for st in self.stages)

    def validate_casing(self) -> None:
        names = [(st.orig_cmd, st.node.start_line, st.node.end_line) for st in self.stages]
        for st in self.stages:
            names += [(c.name, c.start, c.end) for c in st.commands]
        self.lint.instruction_casing(names)

    # -- phase 3: global args and FROM ---------------------------------------------------------
    def default_args(self) -> dict[str, str]:
        target_name = self.target if self.target is not None else self.stages[-1].name
        return automatic_args(self.build_platform, self.target_platform, target_name, self.build_args)

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
                self.lint.default_base_image(st.base_name, self.shlex.process_word(st.base_name, args), st.node)
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
        self.lint.undefined_from_args(res.unmatched, declared, arg_keys, st.node)
        st.expanded_base = res.result
        st.base = by_name.get(res.result)
        platform = st.base.os if st.base is not None else self.target_platform.os
        if st.platform is not None:
            pres = self.shlex.process(st.platform, global_args)
            self.lint.undefined_from_args(pres.unmatched, declared, arg_keys, st.node)
            self.lint.from_platform(st.platform, pres.result, pres.matched, pres.unmatched,
                                    global_args.get("TARGETPLATFORM", ""), st.name, self.target_platform, st.node)
            parsed = parse_platform(pres.result, self.target_platform) if pres.result else None
            if parsed is not None:
                platform = parsed.os
        st.os = platform
        if st.name:
            by_name[st.name] = st

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
                expected = parse_platform(self.shlex.process_word(st.platform, global_args),
                                           self.target_platform) or expected
            actual_str = self.base_platform(st.expanded_base)
            actual = parse_platform(actual_str, self.target_platform) if actual_str else None
            if actual is None:
                continue
            self.lint.base_image_platform(st.expanded_base, actual, expected, st.node)

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
        names = sorted(unmatched - set(st.build_args) - NON_ENV_ARGS)
        self.lint.undefined_vars(names, list(st.env), cmd.start, cmd.end)

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
                    self.lint.multiple_instructions(cmd.name, prev.start, prev.end)
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
        self.lint.legacy_key_value(cmd.name, cmd.start, cmd.end)

    def secret(self, instruction: str, key: str, cmd: _Cmd) -> None:
        self.lint.secret(instruction, key, cmd.start, cmd.end)

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
            if value is not None and key not in NON_ENV_ARGS:
                st.env[key] = value
            st.build_args.append(key)

    def do_workdir(self, st: _Stage, cmd: _Cmd, _: dict[str, str]) -> None:
        path = self.expand(st, cmd, cmd.node.args[0] if cmd.node.args else "")
        absolute = ntpath.isabs(path) or path.startswith("/") if st.os == "windows" else path.startswith("/")
        if not st.workdir_set and not absolute:
            self.lint.workdir_relative(path, cmd.start, cmd.end)
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
            self.lint.json_args(cmd.name, cmd.start, cmd.end)

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
                self.lint.copy_ignored(add, src, cmd.start, cmd.end)

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
               error: CheckError | None = None, parsed: ParseResult | None = None) -> CheckReport:
    """Lint ``text`` as BuildKit v0.20 does; parser and lexer errors propagate, a bad config raises CheckConfigError.

    ``ignore(path)`` answers whether a context path is excluded by .dockerignore (CopyIgnoredFile);
    ``base_platform(image)`` gives an image's ``os/arch[/variant]`` (InvalidBaseImagePlatform);
    ``base_env(image)`` gives its config env (UndefinedVar), ``base_shell(image)`` whether its config sets a
    SHELL (JSONArgsRecommended). ``all_stages`` defaults to ``target is None`` (``docker build --check`` lints
    every stage; a build only reachable ones). ``error`` is the conversion's error, if it failed: the checks
    stop where BuildKit's would and the report carries it (or an earlier error the checks found themselves).
    ``parsed`` is ``text`` already parsed (shared with the conversion), else it is parsed here.
    """
    build_args = dict(build_args or {})
    result = parsed if parsed is not None else parse(text)
    config = parse_check_config(result.directives.get("check"), build_args.get(BUILD_ARG_KEY))
    tp = parse_platform(target_platform) or Platform("linux", "amd64")
    bp = parse_platform(build_platform, tp) if build_platform else None
    checker = _Checker(result, text, config, build_args, target, target is None if all_stages is None else all_stages,
                       ignore, base_platform, base_env, tp, bp or tp, base_shell, error)
    checker.run()
    found = checker.error
    if found is not None and error is not None and (found.start_line == error.start_line or not found.start_line):
        found = error  # the same failure: the conversion's words for it
    return CheckReport(checker.lint.warnings, config, found or error)
