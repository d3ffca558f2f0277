"""Dockerfile → LLB: stages, instructions and the image config, with a source map to Dockerfile lines."""

from __future__ import annotations

import copy as _copy
import dataclasses
import difflib
import json
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from workbench.frontend.dockerfile.addsource import is_http_source, parse_git_ref, url_filename
from workbench.frontend.dockerfile.buildargs import NON_ENV_ARGS, platform_args
from workbench.frontend.dockerfile.parser import (
    DockerfileParseError,
    Node,
    ParseResult,
    argument_count_error,
    must_parse_heredoc,
    parse,
    unknown_instruction,
)
from workbench.frontend.dockerfile.runmount import MountSpecError, parse_device, parse_mount
from workbench.frontend.dockerfile.shell import ShellExpansionError, ShellLex
from workbench.frontend.dockerfile.stepnames import (
    NUMBERED,
    StepCounter,
    extra_states,
    instruction_text,
    link_name,
    secret_envs,
    step_text,
    step_total,
)
from workbench.llb.marshal import with_marshalled_names
from workbench.llb.ops import (
    Copy,
    Device,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    LocalSource,
    MergeOp,
    Mkdir,
    Mkfile,
    Mount,
    ScratchSource,
    StepConfig,
    Vertex,
)
from workbench.progress.events import SourceLocation
from workbench.progress.text import shorten

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]

# (ref as written, platform "os/arch[/variant]") -> (canonical ref string, manifest digest, image config dict)
ImageResolver = Callable[[str, str], tuple[str, str, dict[str, Any]]]


class DockerfileError(Exception):
    """An error in the Dockerfile, located at a line range (1-based)."""

    def __init__(self, message: str, start_line: int | None = None, end_line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.start_line = start_line
        self.end_line = end_line or start_line

    @classmethod
    def at(cls, node: Node, message: str) -> DockerfileError:
        """An error found while parsing `node`'s instruction, worded as BuildKit's parse errors."""
        return cls(f"dockerfile parse error on line {node.start_line}: {message}", node.start_line, node.end_line)




@dataclass
class ConvertOptions:
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    filename: str = "Dockerfile"
    context_name: str = "context"
    excludes: tuple[str, ...] = ()
    platform: str = "linux/amd64"
    on_dispatch: Callable[[], None] | None = None
    """Called once the stages are parsed and the target found, before any stage is converted (where
    BuildKit, its base images resolved, loads .dockerignore)."""
    no_cache_stages: tuple[str, ...] = ()
    """`--no-cache-filter`: the RUN, COPY and ADD steps of these stages (names ignoring case) ignore the cache."""


@dataclass
class ConvertResult:
    vertex: Vertex
    image: dict[str, Any]
    """The full OCI image config for the target stage, without rootfs (added at export)."""
    stage: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Stage:
    index: int
    name: str
    base: str
    node: Node
    commands: list[Node]
    platform: str = ""
    vertex: Vertex | None = None
    image: dict[str, Any] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    env: dict[str, str] = field(default_factory=dict)
    """The stage's environment as BuildKit's LLB state holds it (image env, then ENV and ARG values): what
    words expand against and what a RUN gets. A key set again moves to the end, as in BuildKit's EnvList."""
    arg_env: set[str] = field(default_factory=set)
    """The keys of `env` whose value an ARG set last."""
    declared_args: list[tuple[str, str | None]] = field(default_factory=list)
    """Every ARG of the stage and of the stages it is based on, with its value, for RUN's history entries."""
    done: bool = False
    env_version: int = 0
    """Bumped at each change of `env`: a step's config is built again only then."""
    config: StepConfig | None = None
    """The config of the stage's last step (shared by the steps after it while nothing changes)."""
    config_version: int = -1
    """The `env_version` that `config`'s env was taken at."""


def _empty_image(platform: str) -> dict[str, Any]:
    os_, _, arch = platform.partition("/")
    return {"architecture": arch or "amd64", "os": os_ or "linux",
            "config": {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}


def _copy_image(image: dict[str, Any]) -> dict[str, Any]:
    """A copy to change: history entries are only ever appended, so they are shared, not copied (a chain of
    thousands of stages would otherwise copy a growing history at every stage)."""
    history = image.get("history")
    out = _copy.deepcopy({k: v for k, v in image.items() if k != "history"})
    if history is not None:
        out["history"] = list(history)
    return out


def _env_map(image: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in image.get("config", {}).get("Env") or []:
        k, _, v = kv.partition("=")
        out[k] = v
    return out


def _set_env(image: dict[str, Any], key: str, value: str) -> None:
    cfg = image.setdefault("config", {})
    env = list(cfg.get("Env") or [])
    for i, kv in enumerate(env):
        if kv.partition("=")[0] == key:
            env[i] = f"{key}={value}"
            break
    else:
        env.append(f"{key}={value}")
    cfg["Env"] = env


def _env_add(stage: _Stage, key: str, value: str, from_arg: bool = False) -> None:
    """Set `key` in the stage's environment, moved to the end (BuildKit's EnvList.AddOrReplace)."""
    stage.env.pop(key, None)
    stage.env[key] = value
    stage.env_version += 1
    if from_arg:
        stage.arg_env.add(key)
    else:
        stage.arg_env.discard(key)


def _run_history(args: list[str], stage: _Stage) -> str:
    """BuildKit's runCommandString: `|N K=V …` (each declared ARG once, with its value in the step's env, else
    its own) before the command."""
    pairs: dict[str, str] = {}
    for key, value in stage.declared_args:
        pairs[key] = stage.env[key] if key in stage.env else (value or "")
    prefix = [f"|{len(pairs)}", *(f"{k}={v}" for k, v in pairs.items())] if pairs else []
    return " ".join(prefix + args)


def _clean(path: str) -> str:
    """Go's path.Clean (posixpath.normpath keeps a leading `//`)."""
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("//") else out


def normalize_workdir(current: str, new: str) -> str:
    """BuildKit's system.NormalizeWorkdir on Linux: a relative WORKDIR joins the current one (cleaned); an
    absolute one is kept as written (`/usr/src/` keeps its slash)."""
    parent = current or "/"
    if not parent.startswith("/"):
        parent = _clean("/" + parent)
    if not new:
        new = parent
    return new if new.startswith("/") else _clean(parent + "/" + new)


def _parse_flags(node: Node, allowed: set[str]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for raw in node.flags:
        name, eq, value = raw[2:].partition("=")
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
            # BuildKit v0.20's words: the flag with its dashes, the suggestion without
            raise DockerfileError.at(node, f"unknown flag: --{name}"
                                     + (f" (did you mean {close[0]}?)" if close else ""))
        flags.setdefault(name, []).append(value if eq else "true")
    return flags


class _Converter:
    def __init__(self, text: str, opts: ConvertOptions, resolve_image: ImageResolver,
                 parsed: ParseResult | None = None) -> None:
        self.opts = opts
        self.resolve_image = resolve_image
        try:
            self.ast = parsed if parsed is not None else parse(text)
        except DockerfileParseError as e:  # without a line, it is about the whole file: name it
            raise DockerfileError(e.message if e.line else f"{opts.filename}: {e.message}", e.line) from None
        self.lex = ShellLex(self.ast.escape_token)
        self.warnings: list[str] = list(self.ast.warnings)
        self.meta_args: dict[str, str] = platform_args(opts.platform)
        self.stages: list[_Stage] = []
        self.context = Vertex(LocalSource(opts.context_name, opts.excludes), name="[internal] load build context")
        self.images: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
        self._names: dict[str, _Stage] = {}

    def _loc(self, node: Node) -> SourceLocation:
        return SourceLocation(self.opts.filename, node.start_line, node.end_line)

    def _expand(self, word: str, env: dict[str, str], node: Node) -> str:
        try:
            return self.lex.process_word(word, env)
        except ShellExpansionError as e:
            raise DockerfileError(str(e), node.start_line, node.end_line) from None

    def _expand_words(self, word: str, env: dict[str, str], node: Node) -> list[str]:
        try:
            return self.lex.process_words(word, env)
        except ShellExpansionError as e:
            raise DockerfileError(str(e), node.start_line, node.end_line) from None

    # -- stages -------------------------------------------------------------------------------------

    def split_stages(self) -> None:
        current: _Stage | None = None
        for node in self.ast.children:
            if node.keyword == "from":
                flags = _parse_flags(node, {"platform"})
                args = node.args
                if len(args) == 3 and args[1].lower() == "as":
                    name = args[2].lower()
                elif len(args) == 1:
                    name = ""
                else:
                    raise DockerfileError.at(node, "FROM requires either one or three arguments")
                base = self._expand(args[0], self.meta_args, node)
                if not base:
                    raise DockerfileError("base name (" + args[0] + ") should not be blank", node.start_line)
                platform = self._expand(flags["platform"][-1], self.meta_args, node) if "platform" in flags else ""
                current = _Stage(len(self.stages), name, base, node, [], platform)
                self.stages.append(current)
            elif current is None:
                unknown = unknown_instruction(node)
                if unknown is not None:  # instructions.Parse reads the instruction before it looks for a stage
                    raise DockerfileError.at(node, shorten(unknown))
                if node.keyword != "arg":
                    raise DockerfileError("no build stage in current context", node.start_line, node.end_line)
                if not node.args:
                    raise DockerfileError.at(node, "ARG requires at least one argument")
                for word in node.args:
                    k, eq, v = word.partition("=")
                    if not k:
                        raise DockerfileError.at(node, "ARG names can not be blank")
                    default = self._expand(v, self.meta_args, node) if eq else None
                    value = self.opts.build_args.get(k, default)
                    if value is not None:
                        self.meta_args[k] = value
            else:
                current.commands.append(node)
        if not self.stages:
            raise DockerfileError(f"{self.opts.filename} has no FROM instruction (no build stage)")

    def _stage_by_name(self, name: str) -> _Stage | None:
        if len(self._names) != len(self.stages):  # the first stage of each name (rebuilt after a split)
            self._names = {}
            for s in self.stages:
                if s.name:
                    self._names.setdefault(s.name, s)
        found = self._names.get(name.lower())
        if found is not None:
            return found
        if name.isdigit() and int(name) < len(self.stages):
            return self.stages[int(name)]
        return None

    def target_stage(self) -> _Stage:
        if self.opts.target:
            stage = self._stage_by_name(self.opts.target)
            if stage is None:
                raise DockerfileError(f'target stage "{self.opts.target}" could not be found')
            return stage
        return self.stages[-1]

    def convert_stage(self, stage: _Stage) -> None:
        """Convert `stage`, after the earlier stages it uses (each once)."""
        if stage.done:
            return
        for s in self._dependency_order(stage):  # without recursion: chains can be thousands of stages long
            self._convert_one(s)

    def _dependency_order(self, stage: _Stage) -> list[_Stage]:
        """`stage` and the stages it names literally (its FROM base, `--from=`), dependencies first.

        A stage only uses stages before it; a `--from` that needs expanding is converted when it is met.
        """
        order: list[_Stage] = []
        placed: set[int] = set()
        stack: list[tuple[_Stage, bool]] = [(stage, False)]
        while stack:
            s, expanded = stack.pop()
            if s.done or s.index in placed:
                continue
            if expanded:
                placed.add(s.index)
                order.append(s)
                continue
            stack.append((s, True))
            stack.extend((d, False) for d in reversed(self._literal_deps(s)))
        return order

    def _literal_deps(self, stage: _Stage) -> list[_Stage]:
        refs = [stage.base] + [ref for node in stage.commands for ref in _from_refs(node) if "$" not in ref]
        deps = []
        for ref in refs:
            other = self._stage_by_name(ref)
            if other is not None and other.index < stage.index and not other.done:
                deps.append(other)
        return deps

    def _convert_one(self, stage: _Stage) -> None:
        if stage.done:
            return
        parent = self._stage_by_name(stage.base)
        from_image = not (parent is not None and parent.index < stage.index) and stage.base.lower() != "scratch"
        steps = StepCounter(self._stage_label(stage), step_total(stage.commands, from_image, 0))
        if parent is not None and parent.index < stage.index:
            self.convert_stage(parent)
            stage.vertex = parent.vertex  # None when the parent is FROM scratch with no layer yet
            stage.image = _copy_image(parent.image)
            stage.shell = list(parent.shell)
        elif stage.base.lower() == "scratch":
            stage.vertex = None
            stage.image = _empty_image(stage.platform or self.opts.platform)
        else:
            platform = stage.platform or self.opts.platform
            ref, digest, image = self._resolve(stage.base, stage.node, platform)
            stage.vertex = Vertex(ImageSource(ref, digest, platform),
                                  name=steps.label(f"FROM {ref}@{digest}"), source=self._loc(stage.node))
            stage.image = _copy.deepcopy(image)
            stage.image.setdefault("config", {})
            shell = stage.image["config"].get("Shell")
            if shell:
                stage.shell = list(shell)
        stage.image.setdefault("history", [])
        self._init_env(stage, parent if parent is not None and parent.index < stage.index else None)
        triggers = self._onbuild_triggers(stage)
        steps.total += len(triggers)  # after the FROM is named, as BuildKit counts them
        for i, node in enumerate([*triggers, *stage.commands]):
            self._dispatch_step(stage, node, steps, onbuild=i < len(triggers))
        stage.done = True

    def _onbuild_triggers(self, stage: _Stage) -> list[Node]:
        """The base's ONBUILD triggers, parsed to run first in this stage; the child image keeps none."""
        cfg = stage.image.setdefault("config", {})
        triggers = cfg.pop("OnBuild", None) or []
        nodes: list[Node] = []
        for trigger in triggers:
            try:
                parsed = parse(trigger)
            except DockerfileParseError as e:
                raise DockerfileError(f"failed to parse ONBUILD trigger {trigger!r}: {e.message}",
                                      stage.node.start_line) from None
            for node in parsed.children:
                if node.keyword in ("onbuild", "from", "maintainer"):
                    raise DockerfileError(f"{node.keyword.upper()} isn't allowed as an ONBUILD trigger",
                                          stage.node.start_line)
                # triggers run at the child's FROM line
                node.start_line = node.end_line = stage.node.start_line
                nodes.append(node)
        return nodes

    def _resolve(self, ref: str, node: Node, platform: str = "") -> tuple[str, str, dict[str, Any]]:
        platform = platform or self.opts.platform
        if (ref, platform) not in self.images:
            try:
                self.images[(ref, platform)] = self.resolve_image(ref, platform)
            except DockerfileError:
                raise
            except Exception as e:
                raise DockerfileError(f"failed to resolve source metadata for {ref}: {e}", node.start_line,
                                      node.end_line) from None
        return self.images[(ref, platform)]

    def _stage_label(self, stage: _Stage) -> str:
        """The stage in its steps' names: its name, else `stage-N`; none when BuildKit's list of states holds
        just this stage (a `COPY --from` image or a `RUN --mount` adds one)."""
        if len(self.stages) == 1:
            names = {s.name for s in self.stages if s.name}
            if not extra_states(names, (n for s in self.stages for n in s.commands)):
                return ""
        return stage.name or f"stage-{stage.index}"

    def _dispatch_step(self, stage: _Stage, node: Node, steps: StepCounter, onbuild: bool) -> None:
        """Dispatch `node`; a RUN/COPY/ADD/WORKDIR is named as BuildKit names it, numbered if it makes a vertex."""
        if node.keyword not in NUMBERED:
            self.dispatch(stage, node, "")
            return
        before = stage.vertex
        masked = secret_envs(node) if node.keyword == "run" else []
        text = step_text(node, self._env_for_expansion(stage), self.ast.escape_token, masked)
        config = self._step_config(stage)  # before the instruction: what it runs in (a WORKDIR's own dir is made)
        self.dispatch(stage, node, steps.label(text, onbuild))
        if stage.vertex is before:
            steps.unlabel()
        elif stage.vertex is not None:
            stage.vertex = replace(stage.vertex, instruction=stage.vertex.instruction or instruction_text(node),
                                   config=config)

    def _step_config(self, stage: _Stage) -> StepConfig:
        """The stage's config as a RUN here would see it: its env (ARG values too), workdir and user."""
        cfg = stage.image.get("config") or {}
        workdir, user = normalize_workdir("/", cfg.get("WorkingDir") or "/"), cfg.get("User") or ""
        last = stage.config
        if last is None or stage.config_version != stage.env_version:
            env: Mapping[str, str] = dict(stage.env)
            stage.config_version = stage.env_version
        elif (last.workdir, last.user) == (workdir, user):
            return last
        else:
            env = last.env_map
        stage.config = StepConfig(env, workdir, user)
        return stage.config

    # -- instructions -------------------------------------------------------------------------------

    def _history(self, stage: _Stage, created_by: str, empty: bool) -> None:
        entry: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "created_by": created_by, "comment": "buildkit.dockerfile.v0"}
        if empty:
            entry["empty_layer"] = True
        stage.image["history"].append(entry)

    def _init_env(self, stage: _Stage, parent: _Stage | None) -> None:
        """The stage's environment at its FROM, as BuildKit builds its state: the parent stage's (ARG values
        included), then the image config's entries, PATH added to the config when it has none."""
        cfg = stage.image.setdefault("config", {})
        if "PATH" not in _env_map(stage.image):
            cfg["Env"] = [*(cfg.get("Env") or []), f"PATH={DEFAULT_PATH}"]
        if parent is not None:
            stage.env, stage.arg_env = dict(parent.env), set(parent.arg_env)
            stage.env_version += 1
            stage.declared_args = list(parent.declared_args)
        for key, value in _env_map(stage.image).items():
            _env_add(stage, key, value)

    def _env_for_expansion(self, stage: _Stage) -> dict[str, str]:
        return dict(stage.env)

    def dispatch(self, stage: _Stage, node: Node, name: str) -> None:
        unknown = unknown_instruction(node)
        if unknown is not None:
            raise DockerfileError.at(node, shorten(unknown))
        handler = getattr(self, f"_do_{node.keyword}")
        count_error = argument_count_error(node)
        if count_error is not None:
            raise DockerfileError.at(node, count_error)
        handler(stage, node, name)

    def _do_env(self, stage: _Stage, node: Node, name: str) -> None:
        args = node.args
        env = self._env_for_expansion(stage)  # every key and value expands against the env before the ENV
        pairs = [(self._expand(args[i], env, node), self._expand(args[i + 1], env, node))
                 for i in range(0, len(args) - 2, 3)]
        parts = []
        for key, value in pairs:
            _set_env(stage.image, key, value)
            _env_add(stage, key, value)
            parts.append(f"{key}={value}")
        self._history(stage, "ENV " + " ".join(parts), True)

    def _do_arg(self, stage: _Stage, node: Node, name: str) -> None:
        committed = []
        for word in node.args:
            k, eq, v = word.partition("=")
            if not k:
                raise DockerfileError.at(node, "ARG names can not be blank")
            if k in self.opts.build_args:
                value: str | None = self.opts.build_args[k]
            elif eq:
                value = self._expand(v, self._env_for_expansion(stage), node)
            else:
                value = self.meta_args.get(k)
            if value is not None:
                stage.args[k] = value
                if k not in NON_ENV_ARGS:
                    _env_add(stage, k, value, from_arg=True)
            # declared again without a value: an earlier value in this stage stays (BuildKit keeps it)
            stage.declared_args.append((k, value))
            committed.append(k if value is None else f"{k}={value}")
        self._history(stage, "ARG " + " ".join(committed), True)

    def _do_label(self, stage: _Stage, node: Node, name: str) -> None:
        cfg = stage.image.setdefault("config", {})
        labels = dict(cfg.get("Labels") or {})
        env = self._env_for_expansion(stage)
        parts = []
        for i in range(0, len(node.args) - 2, 3):
            k = self._expand(node.args[i], env, node)
            v = self._expand(node.args[i + 1], env, node)
            labels[k] = v
            parts.append(f"{k}={v}")
        cfg["Labels"] = labels
        self._history(stage, "LABEL " + " ".join(parts), True)

    def _do_maintainer(self, stage: _Stage, node: Node, name: str) -> None:
        stage.image["author"] = " ".join(node.args)
        self._history(stage, "MAINTAINER " + " ".join(node.args), True)

    def _do_expose(self, stage: _Stage, node: Node, name: str) -> None:
        cfg = stage.image.setdefault("config", {})
        ports = dict(cfg.get("ExposedPorts") or {})
        env = self._env_for_expansion(stage)
        for word in node.args:
            for p in self._expand_words(word, env, node):
                if "/" not in p:
                    p += "/tcp"
                ports[p.lower()] = {}
        cfg["ExposedPorts"] = ports
        self._history(stage, "EXPOSE " + " ".join(node.args), True)

    def _do_volume(self, stage: _Stage, node: Node, name: str) -> None:
        cfg = stage.image.setdefault("config", {})
        vols = dict(cfg.get("Volumes") or {})
        env = self._env_for_expansion(stage)
        words = node.args if node.json_form else [w for a in node.args for w in a.split()]
        for w in words:
            v = self._expand(w, env, node)
            if not v:
                raise DockerfileError("VOLUME specified can not be an empty string", node.start_line)
            vols[v] = {}
        cfg["Volumes"] = vols
        self._history(stage, "VOLUME " + json.dumps(words), True)

    def _do_stopsignal(self, stage: _Stage, node: Node, name: str) -> None:
        sig = self._expand(node.args[0], self._env_for_expansion(stage), node)
        stage.image.setdefault("config", {})["StopSignal"] = sig
        self._history(stage, "STOPSIGNAL " + sig, True)

    def _do_user(self, stage: _Stage, node: Node, name: str) -> None:
        user = self._expand(node.args[0], self._env_for_expansion(stage), node)
        stage.image.setdefault("config", {})["User"] = user
        self._history(stage, "USER " + user, True)

    def _do_shell(self, stage: _Stage, node: Node, name: str) -> None:
        if not node.json_form:
            raise DockerfileError.at(node, "SHELL requires the arguments to be in JSON form")
        stage.shell = list(node.args)
        stage.image.setdefault("config", {})["Shell"] = list(node.args)
        self._history(stage, "SHELL " + json.dumps(node.args), True)

    def _command(self, stage: _Stage, node: Node) -> list[str]:
        if node.json_form:
            return list(node.args)
        return stage.shell + [" ".join(node.args)]

    def _do_cmd(self, stage: _Stage, node: Node, name: str) -> None:
        cmd = self._command(stage, node)
        stage.image.setdefault("config", {})["Cmd"] = cmd
        stage.cmd_set = True
        self._history(stage, "CMD " + json.dumps(cmd), True)

    def _do_entrypoint(self, stage: _Stage, node: Node, name: str) -> None:
        ep = self._command(stage, node)
        cfg = stage.image.setdefault("config", {})
        cfg["Entrypoint"] = ep
        if not stage.cmd_set:
            cfg.pop("Cmd", None)
        self._history(stage, "ENTRYPOINT " + json.dumps(ep), True)

    def _do_onbuild(self, stage: _Stage, node: Node, name: str) -> None:
        text = node.original.strip()
        trigger = text.split(None, 1)[1].strip() if len(text.split(None, 1)) > 1 else ""
        cfg = stage.image.setdefault("config", {})
        cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [trigger]
        self._history(stage, "ONBUILD " + trigger, True)

    def _do_healthcheck(self, stage: _Stage, node: Node, name: str) -> None:
        flags = _parse_flags(node, {"interval", "timeout", "start-period", "start-interval", "retries"})
        cfg = stage.image.setdefault("config", {})
        args = node.args
        if args and args[0].upper() == "NONE":
            cfg["Healthcheck"] = {"Test": ["NONE"]}
        else:
            if not args or args[0].upper() != "CMD":
                raise DockerfileError("HEALTHCHECK requires NONE or CMD", node.start_line)
            rest = args[1:]
            test = ["CMD"] + rest if node.json_form else ["CMD-SHELL", " ".join(rest)]
            hc: dict[str, Any] = {"Test": test}
            for flag, field_name in [("interval", "Interval"), ("timeout", "Timeout"),
                                     ("start-period", "StartPeriod"), ("start-interval", "StartInterval")]:
                if flag in flags:
                    hc[field_name] = _duration_ns(flags[flag][0], node)
            if "retries" in flags:
                hc["Retries"] = int(flags["retries"][0])
            cfg["Healthcheck"] = hc
        self._history(stage, "HEALTHCHECK " + " ".join(args), True)

    def _do_workdir(self, stage: _Stage, node: Node, name: str) -> None:
        cfg = stage.image.setdefault("config", {})
        wd = self._expand(node.args[0], self._env_for_expansion(stage), node)
        wd = normalize_workdir(cfg.get("WorkingDir") or "/", wd)
        cfg["WorkingDir"] = wd
        if wd != "/":  # BuildKit makes no mkdir (and no layer) for `WORKDIR /`
            stage.vertex = Vertex(FileOp((Mkdir(_clean(wd), 0o755, True, cfg.get("User") or ""),)),
                                  inputs=self._base_inputs(stage), name=name, source=self._loc(node))
        self._history(stage, "WORKDIR " + wd, wd == "/")

    def _base_inputs(self, stage: _Stage) -> tuple[Vertex, ...]:
        return (stage.vertex,) if stage.vertex is not None else (Vertex(ScratchSource(), name="scratch"),)

    def _do_run(self, stage: _Stage, node: Node, name: str) -> None:
        flags = _parse_flags(node, {"network", "mount", "security", "device"})
        network = flags.get("network", ["default"])[-1]
        if network not in ("default", "none", "host"):
            raise DockerfileError(f"unsupported network mode: {network}", node.start_line, node.end_line)
        security = flags.get("security", ["sandbox"])[-1]
        if security not in ("sandbox", "insecure"):
            raise DockerfileError(f"unsupported security mode {security!r}", node.start_line, node.end_line)
        env_map = self._env_for_expansion(stage)
        cfg = stage.image.setdefault("config", {})
        workdir = normalize_workdir("/", cfg.get("WorkingDir") or "/")
        inputs: list[Vertex] = [self._base_inputs(stage)[0]]
        mounts: list[Mount] = []
        ssh_count = 0
        for value in flags.get("mount", []):
            try:
                spec = parse_mount(value, lambda w: self._expand(w, env_map, node))
            except MountSpecError as e:
                raise DockerfileError(str(e), node.start_line, node.end_line) from None
            mount, source_vertex = self._mount(stage, node, spec, workdir, ssh_count)
            ssh_count += spec.type == "ssh"
            if source_vertex is not None:
                inputs.append(source_vertex)
                mount = replace(mount, input=len(inputs) - 1)
            mounts.append(mount)
        devices = []
        for value in flags.get("device", []):
            try:
                dev_name, required = parse_device(self._expand(value, env_map, node))
            except MountSpecError as e:
                raise DockerfileError(str(e), node.start_line, node.end_line) from None
            devices.append(Device(dev_name, required))
        args, heredoc_mount = self._run_args(stage, node)
        if heredoc_mount is not None:
            inputs.append(heredoc_mount[1])
            mounts.append(replace(heredoc_mount[0], input=len(inputs) - 1))
        env = tuple(f"{k}={v}" for k, v in stage.env.items())
        op = ExecOp(tuple(args), env, workdir, cfg.get("User") or "", network, tuple(mounts), security,
                    tuple(devices))
        stage.vertex = Vertex(op, inputs=tuple(inputs), name=name, source=self._loc(node),
                              arg_names=frozenset(stage.arg_env), ignore_cache=self._no_cache(stage))
        self._history(stage, "RUN " + _run_history(args, stage) + " # buildkit", False)

    def _no_cache(self, stage: _Stage) -> bool:
        """Whether `--no-cache-filter` names `stage` (as BuildKit's `IsNoCache`: a named stage, any case)."""
        return bool(stage.name) and any(stage.name.casefold() == n.casefold() for n in self.opts.no_cache_stages)

    def _run_args(self, stage: _Stage, node: Node) -> tuple[list[str], tuple[Mount, Vertex] | None]:
        """RUN's process args, heredocs applied as BuildKit does; and the /dev/pipes mount of a `#!` heredoc."""
        if not node.heredocs:
            return self._command(stage, node), None
        if node.json_form or len(node.args) != 1:
            raise DockerfileError(f"parsing produced an invalid run command: {node.args}", node.start_line)
        first = node.heredocs[0]
        try:
            single = must_parse_heredoc(node.args[0])
        except ValueError as e:
            raise DockerfileError(str(e), node.start_line, node.end_line) from None
        if single is not None:
            if first.content.startswith("#!"):
                script = Vertex(FileOp((Mkfile("/" + first.name, first.content.encode(), 0o755),)),
                                inputs=(Vertex(ScratchSource(), name="scratch"),),
                                name="[internal] preparing inline document", source=self._loc(node))
                mount = Mount("bind", "/dev/pipes", source="/", readonly=True)
                return [posixpath.join("/dev/pipes/", first.name)], (mount, script)
            return stage.shell + [first.content], None
        full = node.args[0]
        for doc in node.heredocs:
            full += "\n" + doc.content + doc.name
        return stage.shell + [full], None

    def _mount(self, stage: _Stage, node: Node, spec: Any, workdir: str,
               ssh_index: int) -> tuple[Mount, Vertex | None]:
        """An LLB mount for a parsed --mount, and the vertex it mounts (if any; its input index is set later)."""
        target = spec.target
        if spec.type == "secret":
            sid = spec.source or spec.id
            if not sid:
                sid = posixpath.basename(spec.target)
            if not target and spec.env is None:
                target = "/run/secrets/" + posixpath.basename(sid)
            if target:
                target = posixpath.normpath(posixpath.join(workdir, target))
            return Mount("secret", target, id=sid, required=spec.required, mode=spec.mode, uid=spec.uid,
                         gid=spec.gid, env=spec.env or ""), None
        if spec.type == "ssh":
            if not target:
                target = f"/run/buildkit/ssh_agent.{ssh_index}"
            target = posixpath.normpath(posixpath.join(workdir, target))
            return Mount("ssh", target, id=spec.id or "default", required=spec.required, mode=spec.mode,
                         uid=spec.uid, gid=spec.gid), None
        target = posixpath.normpath(posixpath.join(workdir, target))  # no target: the working directory
        if target == "/":
            raise DockerfileError('invalid mount target "/"', node.start_line, node.end_line)
        source = posixpath.normpath(posixpath.join("/", spec.source))
        if spec.type == "tmpfs":
            return Mount("tmpfs", target, readonly=spec.readonly, size=spec.size), None
        source_vertex: Vertex | None
        if spec.from_:
            source_vertex = self._copy_source(self._expand(spec.from_, self.meta_args | stage.args, node), stage,
                                              node, "--mount from")
        elif spec.type == "bind":
            source_vertex = self.context
        else:
            source_vertex = None
        if spec.type == "cache":
            cache_id = spec.id or _clean(spec.target)  # BuildKit: the target as written, cleaned
            return Mount("cache", target, source=source, readonly=spec.readonly, id=cache_id,
                         sharing=spec.sharing or "shared", mode=spec.mode, uid=spec.uid, gid=spec.gid), source_vertex
        return Mount("bind", target, source=source, readonly=spec.readonly), source_vertex

    def _do_add(self, stage: _Stage, node: Node, name: str) -> None:
        self._copy_like(stage, node, name, add=True)

    def _do_copy(self, stage: _Stage, node: Node, name: str) -> None:
        self._copy_like(stage, node, name, add=False)

    def _copy_like(self, stage: _Stage, node: Node, name: str, add: bool) -> None:
        command = "ADD" if add else "COPY"
        allowed = {"chown", "chmod", "link", "exclude"} | (
            {"keep-git-dir", "checksum"} if add else {"from", "parents"})
        flags = _parse_flags(node, allowed)
        env = self._env_for_expansion(stage)
        if node.json_form:
            words = [self._expand(w, env, node) for w in node.args]
        else:
            words = [w for a in node.args for w in self._expand_words(a, env, node)]
        if len(words) < 2:
            raise DockerfileError.at(node, f"{command} requires at least two arguments, but only one was provided. "
                                     "Destination could not be determined.")
        sources, dest = words[:-1], words[-1]
        written_dest = dest
        if must_parse_heredoc(dest) is not None:
            raise DockerfileError.at(node, f"{command} cannot accept a heredoc as a destination")
        # several sources and a dest without a slash: no error in BuildKit, each source is copied to dest in turn
        cfg = stage.image.setdefault("config", {})
        dest_is_dir = dest.endswith("/") or dest.endswith("/.") or dest == "."
        dest = posixpath.join(cfg.get("WorkingDir") or "/", dest)
        if dest_is_dir and not dest.endswith("/"):
            dest += "/"
        chown = self._expand(flags["chown"][-1], env, node) if "chown" in flags else ""
        mode, mode_str = self._chmod(flags, env, node)
        excludes = tuple(self._expand(x, env, node) for x in flags.get("exclude", []))
        parents = _flag_bool(flags, "parents", node)
        link = _flag_bool(flags, "link", node)
        keep_git_dir = _flag_bool(flags, "keep-git-dir", node)
        checksum = self._expand(flags["checksum"][-1], env, node) if "checksum" in flags else ""
        if checksum:
            if len(sources) != 1 or not is_http_source(sources[0]) or parse_git_ref(sources[0]) is not None:
                raise DockerfileError("checksum can't be specified for multiple sources" if len(sources) > 1
                                      else "checksum can't be specified for non-HTTP(S) sources",
                                      node.start_line, node.end_line)
            if not checksum.startswith("sha256:") or len(checksum) != 71:
                raise DockerfileError(f"invalid checksum digest format: {checksum}", node.start_line)

        base = self._base_inputs(stage)[0]
        inputs: list[Vertex] = [Vertex(ScratchSource(), name="scratch") if link else base]
        actions: list[Copy] = []
        docs = iter(node.heredocs)
        shown: list[str] = []
        shown_docs: list[str] = []

        def input_index(vertex: Vertex) -> int:
            for i, existing in enumerate(inputs):
                if existing is vertex or (i > 0 and existing.digest == vertex.digest):
                    return i
            inputs.append(vertex)
            return len(inputs) - 1

        common: dict[str, Any] = {"owner": chown, "mode": mode, "mode_str": mode_str, "dest_is_dir": dest_is_dir,
                  "exclude_patterns": excludes}
        for src in sources:
            doc = next(docs, None) if node.heredocs and must_parse_heredoc(src) is not None else None
            if doc is not None:
                content = doc.content
                if doc.expand:
                    raw = ShellLex("\\", skip_process_quotes=True)
                    try:
                        content = raw.process_word(content, env)
                    except ShellExpansionError as e:
                        raise DockerfileError(str(e), node.start_line, node.end_line) from None
                inline = Vertex(FileOp((Mkfile("/" + doc.name, content.encode(), 0o644),)),
                                inputs=(Vertex(ScratchSource(), name="scratch"),),
                                name="[internal] preparing inline document", source=self._loc(node))
                actions.append(Copy(input_index(inline), "/" + doc.name, dest, allow_wildcard=False, **common))
                shown_docs.append("<<" + doc.name)
                continue
            git = parse_git_ref(src) if add else None
            if git is not None:
                # BuildKit names a remote source after its step: a fetch error shows at the ADD
                vertex = Vertex(GitSource(git.remote, git.ref, git.subdir, keep_git_dir), name=name,
                                source=self._loc(node), instruction=f"load git source {src}")
                actions.append(Copy(input_index(vertex), "/", dest, allow_wildcard=False, **common))
            elif add and is_http_source(src):
                filename = url_filename(src)
                vertex = Vertex(HttpSource(src, checksum, filename), name=name, source=self._loc(node),
                                instruction=f"load remote file {src}")
                actions.append(Copy(input_index(vertex), "/" + filename, dest, allow_wildcard=False, **common))
            else:
                if keep_git_dir and add:
                    raise DockerfileError("--keep-git-dir is only allowed with git sources", node.start_line)
                if "from" in flags:
                    src_vertex = self._copy_source(self._expand(flags["from"][-1], self.meta_args | stage.args,
                                                                node), stage, node, f"{command} --from")
                else:
                    src_vertex = self.context
                # a wildcard matching nothing copies nothing (BuildKit's AllowEmptyWildcard)
                actions.append(Copy(input_index(src_vertex), src, dest, parents=parents, allow_empty_wildcard=True,
                                    attempt_unpack=add and "from" not in flags, **common))
            shown.append(src)
        if link and stage.vertex is not None:
            # --link: the copy is a layer of its own on scratch, stacked on the base (so its cache ignores the base)
            text = instruction_text(node)
            layer = Vertex(FileOp(tuple(actions)), inputs=tuple(inputs), name=name, source=self._loc(node),
                           instruction=text, ignore_cache=self._no_cache(stage))
            stage.vertex = Vertex(MergeOp(), inputs=(base, layer), name=link_name(name), source=self._loc(node),
                                  instruction="LINK " + text, hidden=True)
        else:
            stage.vertex = Vertex(FileOp(tuple(actions)), inputs=tuple(inputs), name=name, source=self._loc(node),
                                  ignore_cache=self._no_cache(stage))
        chmod = self._expand(flags["chmod"][-1], env, node) if "chmod" in flags else ""
        flag_text = [f for f, on in (("--parents", parents), (f"--chown={chown}", chown), (f"--chmod={chmod}", chmod))
                     if on]
        self._history(stage, " ".join([command, *flag_text, *shown, *shown_docs, written_dest]) + " # buildkit",
                      False)

    def _chmod(self, flags: dict[str, list[str]], env: dict[str, str], node: Node) -> tuple[int | None, str]:
        """--chmod: an octal mode (<= 07777) or a symbolic one (`u+x,g=r`), checked as BuildKit's parser does."""
        from workbench.solver.fileops import FileActionError, parse_chmod

        if "chmod" not in flags:
            return None, ""
        text = self._expand(flags["chmod"][-1], env, node)
        if re.fullmatch(r"[0-7]+", text) and int(text, 8) <= 0o7777:
            return int(text, 8), ""
        try:
            parse_chmod(text)
        except FileActionError as e:
            raise DockerfileError(str(e), node.start_line, node.end_line) from None
        return None, text

    def _copy_source(self, ref: str, stage: _Stage, node: Node, what: str = "COPY --from") -> Vertex:
        other = self._stage_by_name(ref)
        if other is not None:
            if other.index >= stage.index:
                raise DockerfileError(f"{what}={ref} refers to a later stage or itself: a stage may only use "
                                      "stages defined before it", node.start_line, node.end_line)
            self.convert_stage(other)
            return other.vertex if other.vertex is not None else Vertex(ScratchSource(), name="scratch")
        canon, digest, _ = self._resolve(ref, node)
        return Vertex(ImageSource(canon, digest, self.opts.platform), name=f"FROM {canon}@{digest}")


def _from_refs(node: Node) -> list[str]:
    """The stage names in a command's `--from=` and `--mount=…,from=…` flags, as written."""
    refs = []
    for flag in node.flags:
        name, _, value = flag.partition("=")
        if name == "--from":
            refs.append(value)
        elif name == "--mount":
            refs += [part[5:] for part in value.split(",") if part.startswith("from=")]
    return refs


def _flag_bool(flags: dict[str, list[str]], name: str, node: Node) -> bool:
    if name not in flags:
        return False
    value = flags[name][-1].lower()
    if value in ("true", "1", "t", ""):
        return True
    if value in ("false", "0", "f"):
        return False
    raise DockerfileError.at(node, f"expecting boolean value for flag {name}, not: {flags[name][-1]}")


def _duration_ns(text: str, node: Node) -> int:
    units = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise DockerfileError(f"invalid duration {text!r}", node.start_line)
    return int(total)


def convert(text: str, opts: ConvertOptions, resolve_image: ImageResolver,
            parsed: ParseResult | None = None) -> ConvertResult:
    """Turn Dockerfile `text` into the LLB of the target stage and that stage's image config.

    `parsed` is `text` already parsed (the build checks' parse, shared), else it is parsed here."""
    conv = _Converter(text, opts, resolve_image, parsed)
    conv.split_stages()
    target = conv.target_stage()
    if opts.on_dispatch is not None:
        opts.on_dispatch()
    conv.convert_stage(target)
    vertex = target.vertex if target.vertex is not None else Vertex(ScratchSource(), name="scratch")
    vertex = with_marshalled_names(vertex)  # stages sharing a base show it under one name, as in BuildKit
    _check_utf8(vertex)
    return ConvertResult(vertex, target.image, target.name or f"stage-{target.index}", conv.warnings)


def _check_utf8(target: Vertex) -> None:
    """A Dockerfile's bytes that are not UTF-8 are read as lone surrogates; a step's op cannot carry them: BuildKit
    refuses to marshal such a string, and so do we, before anything runs, at the step's line."""
    for v in target.walk():
        # a context's exclude patterns come from .dockerignore, which BuildKit passes on as JSON (no error)
        if v.source is not None and not isinstance(v.op, LocalSource) and _not_utf8(v.op):
            raise DockerfileError("failed to marshal LLB definition: string field contains invalid UTF-8 (this "
                                  "step carries bytes of the Dockerfile that are not UTF-8)", v.source.start_line,
                                  v.source.end_line)


def _not_utf8(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, tuple | list | frozenset | set):
        return any(_not_utf8(x) for x in value)
    if isinstance(value, dict):
        return any(_not_utf8(k) or _not_utf8(x) for k, x in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_not_utf8(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False
