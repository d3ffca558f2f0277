"""Dockerfile → LLB: stages, instructions and the image config, with a source map to Dockerfile lines."""

from __future__ import annotations

import copy as _copy
import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.frontend.dockerfile.parser import DockerfileParseError, Node, parse
from workbench.frontend.dockerfile.shell import ShellExpansionError, ShellLex
from workbench.llb.ops import Copy, ExecOp, FileOp, ImageSource, LocalSource, Mkdir, ScratchSource, Vertex
from workbench.progress.events import SourceLocation

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]

# (ref as written) -> (canonical ref string, manifest digest, image config dict)
ImageResolver = Callable[[str], tuple[str, str, dict[str, Any]]]


class DockerfileError(Exception):
    """An error in the Dockerfile, located at a line range (1-based)."""

    def __init__(self, message: str, start_line: int | None = None, end_line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.start_line = start_line
        self.end_line = end_line or start_line


@dataclass
class ConvertOptions:
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    filename: str = "Dockerfile"
    context_name: str = "context"
    excludes: tuple[str, ...] = ()
    platform: str = "linux/amd64"


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
    done: bool = False


def _empty_image(platform: str) -> dict[str, Any]:
    os_, _, arch = platform.partition("/")
    return {"architecture": arch or "amd64", "os": os_ or "linux",
            "config": {"Env": [f"PATH={DEFAULT_PATH}"]}, "rootfs": {"type": "layers", "diff_ids": []},
            "history": []}


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


def _parse_flags(node: Node, allowed: set[str]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for raw in node.flags:
        name, eq, value = raw[2:].partition("=")
        if name not in allowed:
            raise DockerfileError(f"unknown flag: --{name}", node.start_line, node.end_line)
        flags.setdefault(name, []).append(value if eq else "true")
    return flags


class _Converter:
    def __init__(self, text: str, opts: ConvertOptions, resolve_image: ImageResolver) -> None:
        self.opts = opts
        self.resolve_image = resolve_image
        try:
            self.ast = parse(text)
        except DockerfileParseError as e:
            raise DockerfileError(e.message, e.line) from None
        self.lex = ShellLex(self.ast.escape_token)
        self.warnings: list[str] = list(self.ast.warnings)
        self.meta_args: dict[str, str] = {}
        self.stages: list[_Stage] = []
        self.context = Vertex(LocalSource(opts.context_name, opts.excludes), name="[internal] load build context")
        self.images: dict[str, tuple[str, str, dict[str, Any]]] = {}

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
                    raise DockerfileError("FROM requires either one or three arguments", node.start_line)
                base = self._expand(args[0], self.meta_args, node)
                if not base:
                    raise DockerfileError("base name (" + args[0] + ") should not be blank", node.start_line)
                current = _Stage(len(self.stages), name, base, node, [], flags.get("platform", [""])[0])
                self.stages.append(current)
            elif current is None:
                if node.keyword != "arg":
                    raise DockerfileError(
                        f"{node.keyword.upper()} before the first FROM: only ARG may come before FROM",
                        node.start_line, node.end_line)
                for word in node.args:
                    k, eq, v = word.partition("=")
                    default = self._expand(v, self.meta_args, node) if eq else None
                    value = self.opts.build_args.get(k, default)
                    if value is not None:
                        self.meta_args[k] = value
            else:
                current.commands.append(node)
        if not self.stages:
            raise DockerfileError("the Dockerfile has no FROM instruction (no build stage)")

    def _stage_by_name(self, name: str) -> _Stage | None:
        lname = name.lower()
        for s in self.stages:
            if s.name and s.name == lname:
                return s
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
        if stage.done:
            return
        prefix_name = stage.name or (f"stage-{stage.index}" if len(self.stages) > 1 else "")
        total = len(stage.commands) + 1
        step = 1

        def label(text: str) -> str:
            head = f"{prefix_name} {step}/{total}" if prefix_name else f"{step}/{total}"
            return f"[{head}] {text}"

        parent = self._stage_by_name(stage.base)
        if parent is not None and parent.index < stage.index:
            self.convert_stage(parent)
            assert parent.vertex is not None
            stage.vertex = parent.vertex
            stage.image = _copy.deepcopy(parent.image)
            stage.shell = list(parent.shell)
        elif stage.base.lower() == "scratch":
            stage.vertex = None
            stage.image = _empty_image(self.opts.platform)
        else:
            ref, digest, image = self._resolve(stage.base, stage.node)
            stage.vertex = Vertex(ImageSource(ref, digest, self.opts.platform),
                                  name=label(f"FROM {ref}@{digest}"), source=self._loc(stage.node))
            stage.image = _copy.deepcopy(image)
            stage.image.setdefault("config", {})
            if not stage.image["config"].get("Env"):
                stage.image["config"]["Env"] = [f"PATH={DEFAULT_PATH}"]
            shell = stage.image["config"].get("Shell")
            if shell:
                stage.shell = list(shell)
        stage.image.setdefault("history", [])
        for node in stage.commands:
            step += 1
            self.dispatch(stage, node, label(self._display(node)))
        stage.done = True

    def _resolve(self, ref: str, node: Node) -> tuple[str, str, dict[str, Any]]:
        if ref not in self.images:
            try:
                self.images[ref] = self.resolve_image(ref)
            except DockerfileError:
                raise
            except Exception as e:
                raise DockerfileError(f"failed to resolve source metadata for {ref}: {e}", node.start_line,
                                      node.end_line) from None
        return self.images[ref]

    def _display(self, node: Node) -> str:
        text = " ".join(line.strip() for line in node.original.splitlines()).strip()
        kw, _, rest = text.partition(" ")
        return f"{kw.upper()} {rest.strip()}".strip()

    # -- instructions -------------------------------------------------------------------------------

    def _history(self, stage: _Stage, created_by: str, empty: bool) -> None:
        entry: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "created_by": created_by, "comment": "buildkit.dockerfile.v0"}
        if empty:
            entry["empty_layer"] = True
        stage.image["history"].append(entry)

    def _env_for_expansion(self, stage: _Stage) -> dict[str, str]:
        return {**stage.args, **_env_map(stage.image)}

    def dispatch(self, stage: _Stage, node: Node, name: str) -> None:
        handler = getattr(self, f"_do_{node.keyword}", None)
        if handler is None:
            raise DockerfileError(f"unknown instruction: {node.keyword.upper()}", node.start_line, node.end_line)
        handler(stage, node, name)

    def _do_env(self, stage: _Stage, node: Node, name: str) -> None:
        args = node.args
        parts = []
        for i in range(0, len(args) - 2, 3):
            key = args[i]
            value = self._expand(args[i + 1], self._env_for_expansion(stage), node)
            _set_env(stage.image, key, value)
            parts.append(f"{key}={value}")
        self._history(stage, "ENV " + " ".join(parts), True)

    def _do_arg(self, stage: _Stage, node: Node, name: str) -> None:
        for word in node.args:
            k, eq, v = word.partition("=")
            if k in self.opts.build_args:
                value: str | None = self.opts.build_args[k]
            elif eq:
                value = self._expand(v, self._env_for_expansion(stage), node)
            else:
                value = self.meta_args.get(k)
            if value is not None:
                stage.args[k] = value
            else:  # declared without a value: unset, so it stays out of RUN's environment
                stage.args.pop(k, None)
        self._history(stage, "ARG " + " ".join(node.args), True)

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
            raise DockerfileError("SHELL requires the arguments to be in JSON form", node.start_line)
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
        wd = posixpath.normpath(posixpath.join(cfg.get("WorkingDir") or "/", wd))
        cfg["WorkingDir"] = wd
        stage.vertex = Vertex(FileOp((Mkdir(wd, 0o755, True, cfg.get("User") or ""),)),
                              inputs=self._base_inputs(stage), name=name, source=self._loc(node))
        self._history(stage, "WORKDIR " + wd, False)

    def _base_inputs(self, stage: _Stage) -> tuple[Vertex, ...]:
        return (stage.vertex,) if stage.vertex is not None else (Vertex(ScratchSource(), name="scratch"),)

    def _do_run(self, stage: _Stage, node: Node, name: str) -> None:
        flags = _parse_flags(node, {"network", "mount", "security", "device"})
        if "mount" in flags or "security" in flags or "device" in flags:
            raise DockerfileError("RUN --mount/--security/--device are not supported yet", node.start_line)
        network = flags.get("network", ["default"])[0]
        if network not in ("default", "none", "host"):
            raise DockerfileError(f"unsupported network mode: {network}", node.start_line)
        if node.heredocs:
            raise DockerfileError("heredocs in RUN are not supported yet", node.start_line)
        args = self._command(stage, node)
        cfg = stage.image.setdefault("config", {})
        env = list(cfg.get("Env") or [])
        env_keys = {e.partition("=")[0] for e in env}
        env += [f"{k}={v}" for k, v in stage.args.items() if k not in env_keys]
        op = ExecOp(tuple(args), tuple(env), cfg.get("WorkingDir") or "/", cfg.get("User") or "",
                    "none" if network == "none" else "host")
        stage.vertex = Vertex(op, inputs=self._base_inputs(stage), name=name, source=self._loc(node))
        self._history(stage, "RUN " + " ".join(args), False)

    def _do_add(self, stage: _Stage, node: Node, name: str) -> None:
        raise DockerfileError("ADD is not supported yet: use COPY for local files", node.start_line, node.end_line)

    def _do_copy(self, stage: _Stage, node: Node, name: str) -> None:
        flags = _parse_flags(node, {"from", "chown", "chmod", "link", "parents", "exclude"})
        if "parents" in flags or "exclude" in flags:
            raise DockerfileError("COPY --parents/--exclude are not supported yet", node.start_line)
        if node.heredocs:
            raise DockerfileError("heredocs in COPY are not supported yet", node.start_line)
        env = self._env_for_expansion(stage)
        if node.json_form:
            words = [self._expand(w, env, node) for w in node.args]
        else:
            words = [w for a in node.args for w in self._expand_words(a, env, node)]
        if len(words) < 2:
            raise DockerfileError("COPY requires at least two arguments", node.start_line, node.end_line)
        sources, dest = words[:-1], words[-1]
        if len(sources) > 1 and not dest.endswith("/"):
            raise DockerfileError("When using COPY with more than one source file, the destination must be a "
                                  "directory and end with a /", node.start_line, node.end_line)
        cfg = stage.image.setdefault("config", {})
        dest_is_dir = dest.endswith("/") or dest.endswith("/.") or dest == "."
        dest = posixpath.join(cfg.get("WorkingDir") or "/", dest)
        chown = self._expand(flags["chown"][0], env, node) if "chown" in flags else ""
        mode = None
        if "chmod" in flags:
            try:
                mode = int(flags["chmod"][0], 8)
            except ValueError:
                raise DockerfileError(f"invalid chmod parameter: {flags['chmod'][0]} (octal modes only for now)",
                                      node.start_line) from None
        if "from" in flags:
            src_vertex = self._copy_source(self._expand(flags["from"][0], self.meta_args | stage.args, node),
                                           stage, node)
        else:
            src_vertex = self.context
        actions = tuple(
            Copy(1, src, dest, owner=chown, mode=mode, dest_is_dir=dest_is_dir,
                 allow_empty_wildcard=False)
            for src in sources
        )
        stage.vertex = Vertex(FileOp(actions), inputs=(self._base_inputs(stage)[0], src_vertex), name=name,
                              source=self._loc(node))
        self._history(stage, f"COPY {' '.join(sources)} {dest}", False)

    def _copy_source(self, ref: str, stage: _Stage, node: Node) -> Vertex:
        other = self._stage_by_name(ref)
        if other is not None:
            if other.index >= stage.index:
                raise DockerfileError(f"COPY --from={ref} refers to a later stage or itself", node.start_line)
            self.convert_stage(other)
            return other.vertex if other.vertex is not None else Vertex(ScratchSource(), name="scratch")
        canon, digest, _ = self._resolve(ref, node)
        return Vertex(ImageSource(canon, digest, self.opts.platform), name=f"[internal] load {canon}")


def _duration_ns(text: str, node: Node) -> int:
    units = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
    import re

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


def convert(text: str, opts: ConvertOptions, resolve_image: ImageResolver) -> ConvertResult:
    """Turn Dockerfile `text` into the LLB of the target stage and that stage's image config."""
    conv = _Converter(text, opts, resolve_image)
    conv.split_stages()
    target = conv.target_stage()
    conv.convert_stage(target)
    vertex = target.vertex if target.vertex is not None else Vertex(ScratchSource(), name="scratch")
    return ConvertResult(vertex, target.image, target.name or f"stage-{target.index}", conv.warnings)
