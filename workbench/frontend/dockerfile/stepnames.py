"""Step names as BuildKit's Dockerfile frontend gives them (dockerfile2llb's prefixCommand, processCmdEnv,
uppercaseCmd, summarizeHeredoc): `[stage n/N] INSTRUCTION` with ARG/ENV values substituted."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from workbench.frontend.dockerfile.parser import Node, must_parse_heredoc
from workbench.frontend.dockerfile.shell import ShellExpansionError, ShellLex

NUMBERED = frozenset({"run", "copy", "add", "workdir"})
"""The instructions that make a vertex and take a step number (with FROM of an image)."""


class StepCounter:
    """Numbers a stage's steps: `[stage  3/12] ` (the number padded to the width of the total)."""

    def __init__(self, stage: str, total: int) -> None:
        self.stage = stage
        self.total = total
        self.index = 0

    def label(self, text: str, onbuild: bool = False) -> str:
        """`text` with the next step's prefix (none when the stage counts no steps, as BuildKit)."""
        if self.total == 0:
            return text
        self.index += 1
        width = int(1 + math.log10(self.total))
        head = f"{self.stage} " if self.stage else ""
        return f"[{head}{self.index:>{width}}/{self.total}] " + ("ONBUILD " if onbuild else "") + text

    def unlabel(self) -> None:
        """Give back the last number: its instruction made no vertex (`WORKDIR /`)."""
        if self.total:
            self.index -= 1


def step_total(commands: Iterable[Node], from_image: bool, triggers: int) -> int:
    """BuildKit's cmdTotal: FROM an image (not scratch, not a stage), each RUN/COPY/ADD/WORKDIR, and every
    ONBUILD trigger of the base whatever its kind."""
    return int(from_image) + sum(n.keyword in NUMBERED for n in commands) + triggers


def _mount_froms(value: str) -> list[str]:
    """The `from=` of one `--mount` value (`scratch` when it has none, as BuildKit's detectRunMount)."""
    for part in value.split(","):
        key, _, v = part.partition("=")
        if key.strip().lower() == "from":
            return [v]
    return ["scratch"]


def extra_states(stage_names: set[str], commands: Iterable[Node]) -> int:
    """The sources BuildKit adds to its stage list besides the FROM stages: each `COPY --from` that is not a
    stage (an image) and each `RUN --mount` whose `from` (scratch when none) is not a stage name."""
    count = 0
    for node in commands:
        for flag in node.flags:
            name, _, value = flag[2:].partition("=")
            if node.keyword == "copy" and name == "from":
                count += not value.lstrip("-").isdigit() and value.lower() not in stage_names
            elif node.keyword == "run" and name == "mount":
                count += sum(ref.lower() not in stage_names for ref in _mount_froms(value))
    return count


def secret_envs(node: Node) -> list[str]:
    """The variables a RUN's `--mount=type=secret,env=X` mounts set (masked in its name)."""
    out = []
    for flag in node.flags:
        name, _, value = flag[2:].partition("=")
        if name != "mount":
            continue
        fields = dict((k.strip().lower(), v) for k, _, v in (p.partition("=") for p in value.split(",")))
        if fields.get("type") == "secret" and fields.get("env"):
            out.append(fields["env"])
    return out


def summarize_heredoc(doc: str) -> str:
    """The heredoc's first line, with `...` when it has more (BuildKit's summarizeHeredoc)."""
    lines = doc.strip().replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")


def instruction_text(node: Node) -> str:
    """The instruction as written on its line (continuations joined), keyword upper-cased: what a step's name
    shows before variables are substituted."""
    text = node.original.strip()
    if node.keyword == "run" and node.heredocs and not node.json_form and len(node.args) == 1 \
            and must_parse_heredoc(node.args[0]) is not None:
        text += f" ({summarize_heredoc(node.heredocs[0].content)})"
    return _uppercase_keyword(text)


def step_text(node: Node, env: Mapping[str, str], escape: str, secret_envs: Iterable[str] = ()) -> str:
    """The name's text for a RUN/COPY/ADD/WORKDIR: ARG and ENV values substituted (in a RUN, quotes kept,
    unset variables left as written and `--mount=type=secret,env=X` shown as `****`)."""
    text = instruction_text(node)
    if node.keyword == "run":
        lex = ShellLex(escape, raw_quotes=True, skip_unset_env=True)
        env = {**env, **{k: "****" for k in secret_envs}}
    else:
        lex = ShellLex(escape)
    try:
        text = lex.process_word(text, env)
    except ShellExpansionError:
        pass  # BuildKit shows the text as written when it does not expand
    return _uppercase_keyword(text)


def _uppercase_keyword(text: str) -> str:
    word, sep, rest = text.partition(" ")
    return word.upper() + sep + rest


def link_name(name: str) -> str:
    """The merge of a `COPY --link`: `[s 2/3] LINK COPY --link …` (shown as part of its copy step)."""
    head, sep, rest = name.partition("] ")
    return f"{head}] LINK {rest}" if name.startswith("[") and sep else "LINK " + name
