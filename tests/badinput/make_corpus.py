"""Writes the bad-input corpus: Dockerfiles (and `.dockerignore` files) that a build must reject cleanly.

Run `python tests/badinput/make_corpus.py` to regenerate tests/badinput/corpus/ (the files are committed;
the output is deterministic). Each case is `NNN-name.Dockerfile`, optionally with the
`NNN-name.Dockerfile.dockerignore` that a build of it reads, and `expected.json` says which commands
(`build`, `check`, `ast`, `llb`) must fail on it; the others may succeed but must not crash either.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
ALL = ("build", "check", "ast", "llb")
NOT_AST = ("build", "check", "llb")  # the parser takes it (as BuildKit's does); the instructions do not
BUILD = ("build",)  # only a build, which reads the context, finds what is wrong

EVIL = "*a*a*a*a*a*a*a*a*a*a*b"
BOGUS = b"\nBOGUS instruction at the end\n"
"""Appended to cases that are hard but valid, so that every command must still get to the end and fail."""


@dataclass
class Case:
    name: str
    dockerfile: bytes
    fails: tuple[str, ...] = NOT_AST
    dockerignore: bytes | None = None


def _cases() -> list[Case]:
    rnd = random.Random(15)
    cases: list[Case] = []

    def add(name: str, dockerfile: bytes | str, fails: tuple[str, ...] = NOT_AST,
            dockerignore: bytes | str | None = None) -> None:
        data = dockerfile.encode() if isinstance(dockerfile, str) else dockerfile
        ignore = dockerignore.encode() if isinstance(dockerignore, str) else dockerignore
        cases.append(Case(name, data, fails, ignore))

    # -- binary, encodings, odd bytes ----------------------------------------------------------------------------
    add("binary-elf", b"\x7fELF\x02\x01\x01\x00" + bytes(rnd.randrange(256) for _ in range(3000)))
    add("binary-random", bytes(rnd.randrange(256) for _ in range(4000)))
    add("binary-gzip", b"\x1f\x8b\x08\x00" + bytes(rnd.randrange(256) for _ in range(1000)))
    add("binary-png", b"\x89PNG\r\n\x1a\n" + bytes(rnd.randrange(256) for _ in range(1000)))
    add("invalid-utf8-keyword", b"FROM scratch\n\xff\xfe COPY a b\n")
    add("invalid-utf8-from", b"FROM scr\xe9tch\n", ALL[:1] + ("llb",))
    add("invalid-utf8-copy-source", b"FROM scratch\nCOPY caf\xe9 /x\n", BUILD)
    add("invalid-utf8-comment", b"# caf\xe9\nFROM scratch\n\xc3" + BOGUS)
    add("invalid-utf8-label", b"FROM scratch\nLABEL a=\xff\xfe\xfd" + BOGUS)
    add("invalid-utf8-truncated", b"FROM scratch\nLABEL a=\xe2\x82" + BOGUS + b"\xe2")
    add("invalid-utf8-overlong", b"FROM scratch\nCOPY \xc0\xaf\xc0\xae /x" + BOGUS)
    add("invalid-utf8-surrogate", b"FROM scratch\nENV a=\xed\xa0\x80" + BOGUS)
    add("utf16-le-bom", "FROM scratch\nRUN true\n".encode("utf-16"))
    add("utf16-be", "FROM scratch\n".encode("utf-16-be"))
    add("utf32", "FROM scratch\n".encode("utf-32"))
    add("utf8-bom-then-error", b"\xef\xbb\xbfFROM scratch" + BOGUS)
    add("double-bom", b"\xef\xbb\xbf\xef\xbb\xbfFROM scratch\n")
    add("only-bom", b"\xef\xbb\xbf", ALL)
    add("nul-bytes", b"FROM scratch\nRUN \x00\x00\x00" + BOGUS)
    add("nul-in-keyword", b"FR\x00OM scratch\n")
    add("nul-only", b"\x00" * 1000)
    add("ansi-escapes", b"FROM scratch\n\x1b[2J\x1b[31mRUN\x1b[0m x\n")
    add("escape-in-label", b"FROM scratch\nLABEL a=\x1b]0;title\x07" + BOGUS)
    add("control-chars", bytes(range(1, 32)) + b"\nFROM scratch\n")
    add("cr-only-lines", b"FROM scratch\rCOPY a b\rBOGUS x\r")  # one line (\r is no line end): FROM has 7 args
    add("crlf", b"FROM scratch\r\nCOPY a /a\r\nBOGUS x\r\n")
    add("crlf-continuation", b"FROM scratch\r\nRUN a \\\r\n  b \\\r\n\r\n  c\r\nBOGUS\r\n")
    add("form-feed-vtab", b"FROM scratch\n\x0c\x0bRUN x\n\x0cBOGUS\n")
    add("unicode-spaces", "FROM\u00a0scratch\nRUN\u2003x\n")
    add("rtl-override", "FROM scratch\nLABEL a=\u202eevil\u202c\nBOGUS\n")

    # -- empty and near-empty --------------------------------------------------------------------------------
    add("empty", b"", ALL)
    add("whitespace-only", b"  \n\t\n \r\n", ALL)
    add("comments-only", b"# a\n# b\n", ALL)
    add("directives-only", b"# syntax=docker/dockerfile:1\n# escape=`\n", ALL)
    add("no-from", b"RUN echo hi\n")
    add("arg-only", b"ARG a=1\nARG b=2\n")
    add("continuation-at-eof", b"FROM scratch\nCOPY a \\")

    # -- size ------------------------------------------------------------------------------------------------
    add("long-line", b"FROM scratch\nLABEL a=" + b"x" * 100_000 + BOGUS)
    add("long-keyword", b"FROM scratch\n" + b"A" * 50_000 + b"\n")
    add("long-word-list", b"FROM scratch\nEXPOSE " + b" ".join(b"%d" % (i % 60000 + 1) for i in range(10_000))
        + BOGUS)
    add("many-continuations", b"FROM scratch\nRUN a \\\n" + b" b \\\n" * 10_000 + b" c" + BOGUS)
    add("many-empty-lines", b"FROM scratch\n" + b"\n" * 50_000 + b"BOGUS\n")
    add("500-instructions", "FROM scratch\n" + "".join(f"ENV V{i}=x{i}\n" for i in range(500)) + "BOGUS\n")
    add("500-runs", "FROM scratch\n" + "".join(f"RUN echo {i}\n" for i in range(500)) + "BOGUS\n")
    add("1000-copies", "FROM scratch\n" + "".join(f"COPY f{i} /f{i}\n" for i in range(1000)) + "BOGUS\n")
    add("10000-stages", "".join(f"FROM scratch AS s{i}\n" for i in range(10_000)) + "BOGUS\n")
    add("10000-chained-stages", "FROM scratch AS s0\nLABEL a=b\n"
        + "".join(f"FROM s{i - 1} AS s{i}\n" for i in range(1, 10_000)) + "BOGUS\n")
    add("3000-copy-from-chain", "FROM scratch AS s0\nCOPY f /f\n" + "".join(
        f"FROM scratch AS s{i}\nCOPY --from=s{i - 1} /f /f\n" for i in range(1, 3000)) + "BOGUS\n")
    add("5000-args", "".join(f"ARG A{i}={i}\n" for i in range(5000)) + "FROM scratch" + "\nBOGUS\n")
    add("label-5000-pairs", "FROM scratch\nLABEL " + " ".join(f"k{i}=v{i}" for i in range(5_000)) + "\nBOGUS\n")
    add("copy-5000-sources", "FROM scratch\nCOPY " + " ".join(f"s{i}" for i in range(5000)) + " /d/\nBOGUS\n")
    add("workdir-deep", "FROM scratch\nWORKDIR " + "/a" * 20_000 + "\nBOGUS\n")

    # -- nesting ---------------------------------------------------------------------------------------------
    add("nested-default-expansion", "FROM scratch\nENV a=" + "${a:-" * 5000 + "x" + "}" * 5000 + "\n")
    add("nested-alt-expansion", "FROM scratch\nARG a=1\nENV b=" + "${a:+" * 3000 + "x" + "}" * 3000 + "\nBOGUS\n")
    add("nested-unclosed-expansion", "FROM scratch\nENV a=" + "${a:-" * 3000 + "x\n")
    add("nested-quotes", "FROM scratch\nENV a=" + "\"'" * 5000 + "\n")
    add("nested-json-arrays", "FROM scratch\nRUN " + "[" * 20_000 + "]" * 20_000 + "\nBOGUS\n")
    add("nested-json-objects", "FROM scratch\nCMD [" + '{"a":' * 5_000 + "1" + "}" * 5_000 + "]\nBOGUS\n")
    add("nested-json-unclosed", "FROM scratch\nENTRYPOINT " + "[" * 20_000 + "\nBOGUS\n")
    add("nested-onbuild", "FROM scratch\n" + "ONBUILD " * 3000 + "RUN x\n")
    add("nested-onbuild-from", "FROM scratch\nONBUILD FROM scratch\n")
    add("many-heredocs", "FROM scratch\nRUN " + " ".join(f"<<E{i}" for i in range(2000)) + " cat\n"
        + "".join(f"x\nE{i}\n" for i in range(2000)) + "BOGUS\n")
    add("heredoc-unterminated", "# syntax=docker/dockerfile:1\nFROM scratch\nRUN <<EOF\nline\n" * 1 + "BOGUS\n",
        ("build", "check", "llb"))
    add("heredoc-huge-unterminated", "FROM scratch\nRUN <<EOF\n" + "line of text\n" * 5_000,
        ("build", "check", "llb"))
    add("heredoc-in-heredoc", "FROM scratch\nCOPY <<A /a\n<<B\nB\nA\nBOGUS\n")
    add("heredoc-odd-names", "FROM scratch\nRUN <<'E O F' <<\"\" <<-\\x\nE O F\n\nx\nBOGUS\n")
    add("backslashes", "FROM scratch\nRUN " + "\\" * 50_000 + "\nBOGUS\n")
    add("escape-backtick", "# escape=`\nFROM scratch\nRUN a ``````` `\n`\nx\nBOGUS\n")
    add("json-bad-escapes", 'FROM scratch\nCMD ["\\ud800", "\\uZZZZ", "\\x00"]\nBOGUS\n')
    add("json-huge-number", "FROM scratch\nCMD [1e999999, 123456789012345678901234567890]\nBOGUS\n")
    add("json-nul", 'FROM scratch\nENTRYPOINT ["a\\u0000b"]\nBOGUS\n')

    # -- variable expansion ----------------------------------------------------------------------------------
    big = "a" * 3000
    for op, what in (("/", "replace"), ("//", "replace-all"), ("#", "trim-prefix"), ("##", "trim-longest-prefix"),
                     ("%", "trim-suffix"), ("%%", "trim-longest-suffix")):
        pattern = EVIL if op[0] != "%" else "b" + "*a" * 10 + "*"  # matched backwards: EVIL again
        tail = "/z}" if op[0] == "/" else "}"
        add(f"expansion-redos-{what}", f"FROM scratch\nARG x={big}\nENV y=${{x{op}{pattern}{tail}\nBOGUS\n")
    add("expansion-billion-laughs", "FROM scratch\nARG a0=xxxxxxxxxx\n" + "".join(
        f"ARG a{i}=" + f"${{a{i - 1}}}" * 10 + "\n" for i in range(1, 12)) + "ENV z=${a11}\n")
    add("expansion-env-doubling", "FROM scratch\nENV a=xxxxxxxxxxxxxxxx\n" + "ENV a=$a$a$a$a\n" * 40)
    add("expansion-required", "FROM scratch\nENV a=${UNSET:?this variable is required}\n")
    add("expansion-unterminated", "FROM scratch\nENV a=${x:-\n")
    add("expansion-empty", "FROM scratch\nENV a=${}\n")
    add("expansion-bad-modifier", "FROM scratch\nARG x=abc\nENV a=${x:0:1} b=${x^^} c=${!x}\n")
    add("expansion-arith", "FROM scratch\nENV a=$((1+1))\nBOGUS\n")
    add("expansion-bad-escape", "FROM scratch\nARG x=abc\nENV a=${x/\\q/z}\n")
    add("expansion-from-blank", "ARG BASE\nFROM ${BASE}\n")
    add("expansion-from-nested", "ARG A=${B:-${C:-${D:-}}}\nFROM $A\n")
    add("expansion-many-vars", "FROM scratch\n" + "".join(f"ARG v{i}=x\n" for i in range(3000))
        + "ENV a=" + "".join(f"$v{i}" for i in range(3000)) + "\nBOGUS\n")

    # -- unknown or bad instructions and flags ---------------------------------------------------------------
    add("unknown-instruction", "FROM scratch\nFROBNICATE x\n")
    add("unknown-instruction-typo", "FROM scratch\nRUNN true\n")
    add("unknown-flag", "FROM scratch\nCOPY --bogus=1 a b\n")
    add("unknown-mount-type", "FROM scratch\nRUN --mount=type=bogus,target=/x true\n")
    add("mount-bad-option", "FROM scratch\nRUN --mount=type=cache,target=/x,sharing=everyone true\n")
    add("mount-no-target", "FROM scratch\nRUN --mount=type=bind true\n")
    add("mount-target-root", "FROM scratch\nRUN --mount=type=tmpfs,target=/ true\n")
    add("mount-from-later", "FROM scratch AS a\nRUN --mount=from=b,target=/x true\nFROM scratch AS b\nFROM a\n")
    add("network-bogus", "FROM scratch\nRUN --network=bogus true\n")
    add("security-bogus", "FROM scratch\nRUN --security=bogus true\n")
    add("device-bogus", "FROM scratch\nRUN --device=,,, true\n")
    add("chmod-bogus", "FROM scratch\nCOPY --chmod=99999 a /b\n")
    add("chmod-symbolic-bogus", "FROM scratch\nCOPY --chmod=u+q a /b\n")
    add("chown-empty", "FROM scratch\nCOPY --chown= a /b" + "\nBOGUS\n")
    add("from-platform-bogus", "FROM --platform=bogus/arch/x/y scratch\nBOGUS\n")
    add("from-five-args", "FROM a b c d e\n")
    add("from-no-args", "FROM\n")
    add("from-unreachable-registry", "FROM 127.0.0.1:9/nope:latest\n")
    add("from-bad-reference", "FROM UPPER/Case:Tag@sha256:zz\n")
    add("copy-from-self", "FROM scratch AS a\nCOPY --from=a /x /y\n")
    add("copy-from-later", "FROM scratch AS a\nCOPY --from=b /x /y\nFROM scratch AS b\nFROM a\n")
    add("healthcheck-bogus", "FROM scratch\nHEALTHCHECK --interval=bogus CMD x\n")
    add("expose-bogus", "FROM scratch\nEXPOSE 99999999/xyz\nBOGUS\n")
    add("stopsignal-bogus", "FROM scratch\nSTOPSIGNAL SIG\x01BOGUS\nBOGUS\n")
    add("add-checksum-bogus", "FROM scratch\nADD --checksum=sha256:zz https://example.invalid/x /x\n")
    add("add-checksum-local", "FROM scratch\nADD --checksum=sha256:" + "0" * 64 + " a /x\n")
    add("env-no-value", "FROM scratch\nENV\n")
    add("env-bad-pair", "FROM scratch\nENV a=b c\n")
    add("arg-bad", "FROM scratch\nARG =x\n")
    add("shell-not-json", "FROM scratch\nSHELL /bin/sh -c\n")
    add("cmd-bad-json", 'FROM scratch\nCMD ["a", \nBOGUS\n')
    add("onbuild-onbuild", "FROM scratch\nONBUILD ONBUILD RUN x\n")
    add("onbuild-maintainer", "FROM scratch\nONBUILD MAINTAINER x\n")
    add("escape-directive-bogus", "# escape=XX\nFROM scratch\n", ALL)
    add("check-directive-bogus", "# check=error=maybe;skip=\x01\nFROM scratch\n", ("build", "check"))
    add("syntax-directive-remote", "# syntax=127.0.0.1:9/frontend\nFROM scratch\nBOGUS\n")
    add("instruction-before-from", "RUN x\nFROM scratch\n")
    add("maintainer-empty", "FROM scratch\nMAINTAINER\n")
    add("volume-empty-json", "FROM scratch\nVOLUME []\nBOGUS\n")
    add("user-empty", "FROM scratch\nUSER\n")
    add("workdir-empty", "FROM scratch\nWORKDIR\n")

    # -- pathological .dockerignore files (a build reads them while copying the context) ---------------------
    copy_all = b"FROM scratch\nCOPY . /\nCOPY missing-file-xyz /\n"
    for name, ignore in (
        ("ignore-star-chain", EVIL),
        ("ignore-star-chain-many", "\n".join([EVIL, "!" + EVIL] * 200)),
        ("ignore-dirstar-chain", "**/" * 300 + "x"),
        ("ignore-star-run", "*" * 5000),
        ("ignore-class-chain", "[a-z]*" * 30 + "[!a]"),
        ("ignore-bad-classes", "[\n[]\n[^]\n[z-a]\n[\\\n]\n[!\n"),
        ("ignore-trailing-backslash", "abc\\\n\\\n\\\\\\"),
        ("ignore-dots", "..\n../../..\n/\n.\n!\n!!\n!..\n"),
        ("ignore-3000-patterns", "\n".join(f"dir{i}/**/*.tmp" for i in range(3_000))),
        ("ignore-long-pattern", "*" + "a?" * 20_000),
        ("ignore-nul", "a\x00b\n\x00\n*\x00*"),
        ("ignore-crlf", "*.log\r\n!keep\r\n\r\n"),
    ):
        add(name, copy_all, BUILD, ignore)
    add("ignore-invalid-utf8", copy_all, BUILD, b"caf\xe9\n\xff\xfe*\n*\xed\xa0\x80")
    add("ignore-binary", copy_all, BUILD, bytes(rnd.randrange(256) for _ in range(3000)))
    return cases


def write(directory: Path = CORPUS) -> list[Case]:
    """(Re)write the corpus into `directory`."""
    cases = _cases()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    expected = {}
    for n, case in enumerate(cases, 1):
        base = f"{n:03d}-{case.name}.Dockerfile"
        (directory / base).write_bytes(case.dockerfile)
        if case.dockerignore is not None:
            (directory / (base + ".dockerignore")).write_bytes(case.dockerignore)
        expected[base] = list(case.fails)
    (directory / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    return cases


if __name__ == "__main__":
    written = write()
    size = sum(p.stat().st_size for p in CORPUS.iterdir())
    print(f"{len(written)} cases, {len(list(CORPUS.iterdir()))} files, {size / 1e6:.2f} MB in {CORPUS}")
