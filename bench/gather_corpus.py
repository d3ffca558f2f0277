#!/usr/bin/env python3
"""Gather a corpus of real-world Dockerfiles from bare git repositories, for bench/differential.py.

    python3 bench/gather_corpus.py --out /tmp/dfcorpus [--mirror /work/.mirror] [REPO_GIT_DIR ...]

Reads bare git directories (by default every `/work/.mirror/OWNER+NAME/repo`, the layout the search tools'
`fetch` leaves; any bare or normal git dir given on the command line works too) and writes, for each file at
HEAD named `Dockerfile`, `Dockerfile.*`, `*.Dockerfile` or `*.dockerfile`, one case folder:

    OUT/<owner>__<name>__<path with / as __>/Dockerfile
    OUT/.../context/        the files under the Dockerfile's folder in the repo (when small enough), so that
                            COPY/ADD of sibling files works as it does in the repo
    OUT/.../case.json       {"source": {"repo", "commit", "path"}, "context": "full" | "none: <why>"}

Byte-identical Dockerfiles are written once. Nothing here is committed: the corpus is data under OUT, made
again from the fetched repositories whenever it is needed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

DOCKERFILE = re.compile(r"(^|/)(Dockerfile(\.[^/]+)?|[^/]+\.[Dd]ockerfile)$")
MAX_CONTEXT_FILES = 300
MAX_CONTEXT_BYTES = 8 << 20
MAX_FILE_BYTES = 2 << 20


def git(gitdir: str, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={gitdir}", *args], check=True, capture_output=True).stdout


def tree(gitdir: str) -> list[tuple[str, str, str, int]]:
    """(mode, blob id, path, size) of every blob at HEAD."""
    out = git(gitdir, "ls-tree", "-r", "-l", "-z", "HEAD").decode("utf-8", "replace")
    rows = []
    for rec in out.split("\0"):
        if not rec:
            continue
        meta, path = rec.split("\t", 1)
        mode, kind, oid, size = meta.split()
        if kind == "blob":
            rows.append((mode, oid, path, int(size) if size.isdigit() else 0))
    return rows


def repo_name(gitdir: str) -> str:
    parts = os.path.abspath(gitdir).rstrip("/").split("/")
    name = parts[-2] if parts[-1] in ("repo", ".git") else parts[-1]
    return name.replace("+", "__").removesuffix(".git")


def write_context(gitdir: str, rows: list[tuple[str, str, str, int]], folder: str, dest: str) -> str:
    prefix = folder + "/" if folder else ""
    files = [r for r in rows if r[2].startswith(prefix)]
    if len(files) > MAX_CONTEXT_FILES or sum(r[3] for r in files) > MAX_CONTEXT_BYTES:
        return f"none: {len(files)} files under {folder or '/'} is more than the corpus keeps"
    os.makedirs(dest, exist_ok=True)
    for mode, oid, path, size in files:
        if mode == "160000" or size > MAX_FILE_BYTES:
            continue
        target = os.path.join(dest, path[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        data = git(gitdir, "cat-file", "blob", oid)
        if mode == "120000":
            if not os.path.lexists(target):
                os.symlink(data.decode("utf-8", "replace"), target)
            continue
        with open(target, "wb") as f:
            f.write(data)
        if mode == "100755":
            os.chmod(target, 0o755)
    return "full"


def gather(gitdir: str, out: str, seen: set[str], with_context: bool) -> int:
    rows = tree(gitdir)
    commit = git(gitdir, "rev-parse", "HEAD").decode().strip()
    name = repo_name(gitdir)
    n = 0
    for mode, oid, path, size in rows:
        if not DOCKERFILE.search(path) or mode not in ("100644", "100755") or size > MAX_FILE_BYTES:
            continue
        data = git(gitdir, "cat-file", "blob", oid)
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen or not data.strip():
            continue
        seen.add(digest)
        case = os.path.join(out, f"{name}__{path.replace('/', '__')}")
        os.makedirs(case, exist_ok=True)
        with open(os.path.join(case, "Dockerfile"), "wb") as f:
            f.write(data)
        ctx = os.path.join(case, "context")
        context = write_context(gitdir, rows, os.path.dirname(path), ctx) if with_context else "none: --no-context"
        if not os.path.isdir(ctx):
            os.makedirs(ctx)
        meta = {"source": {"repo": name.replace("__", "/", 1), "commit": commit, "path": path}, "context": context}
        with open(os.path.join(case, "case.json"), "w") as f:
            json.dump(meta, f, indent=1)
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="corpus folder to write (created)")
    ap.add_argument("--mirror", default="/work/.mirror", help="folder of OWNER+NAME/repo bare git dirs")
    ap.add_argument("--no-context", action="store_true", help="write only the Dockerfiles, with empty contexts")
    ap.add_argument("gitdirs", nargs="*", help="git dirs to read (default: every repo under --mirror)")
    a = ap.parse_args()
    gitdirs = a.gitdirs or sorted(
        os.path.join(a.mirror, d, "repo") for d in os.listdir(a.mirror)
        if os.path.isdir(os.path.join(a.mirror, d, "repo")))
    os.makedirs(a.out, exist_ok=True)
    seen: set[str] = set()
    total = 0
    for g in gitdirs:
        try:
            n = gather(g, a.out, seen, not a.no_context)
        except subprocess.CalledProcessError as e:
            print(f"skip {g}: {e.stderr.decode(errors='replace').strip()}", file=sys.stderr)
            continue
        print(f"{repo_name(g)}: {n} Dockerfiles")
        total += n
    print(f"{total} Dockerfiles in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
