#!/usr/bin/env python3
"""Differential test of workbench against BuildKit: build every Dockerfile with both, print what differs.

    python3 bench/differential.py [--buildctl PATH] [--addr ADDR] [--wb CMD] [--jobs N] [--only REGEX]
                                  [--json FILE] [--no-rewrite] DIR_OR_CASE ...

The oracle is a BuildKit v0.20.0 daemon that you provide and run yourself (it is never a dependency of
workbench, and nothing here builds it): a buildkitd with the Dockerfile labs features, its OCI worker on the host
network, and `localhost:5055` marked `http = true` in its config; `sh tests/conformance/registry.sh` starts the
local registry on 127.0.0.1:5055 holding localhost:5055/busybox.

`--buildctl` / `$BUILDCTL` (default /tmp/bk/buildctl) and `--addr` / `$BUILDKIT_ADDR` (default
unix:///tmp/bk/buildkitd.sock) say where the oracle is; `--wb` / `$WB` (default .venv/bin/workbench) is the
workbench command, run with its own `--root` (`--wb-root`, default /tmp/differential-wbroot).

A case is either a folder holding a `Dockerfile`, an optional `context/` (the build context; empty when
absent) and an optional `case.json` (`args`, `target`, `secrets`, `allow`, as in tests/conformance/cases), or a
single file (any name) built with an empty context. A DIR argument that is not itself a case is searched one
level down for cases (tests/conformance/cases, a corpus made by bench/gather_corpus.py).

Rewriting (off with --no-rewrite): the oracle has no network, only the local registry. So before building,
every `FROM` whose image is not `scratch` nor an earlier stage, and every `COPY/ADD --from=` / `--mount=...,from=`
naming an image rather than a stage, is rewritten to `localhost:5055/busybox` (flags and `AS name` kept; a
`$VAR` image is expanded with the ARG defaults before the first FROM to tell a stage from an image). The rewrite
keeps every line where it was, so check results keep their line numbers. `# syntax=` is not followed: the oracle
always runs its built-in Dockerfile frontend (`--opt cmdline=…` turns the forwarding off).

For each case both builders are run twice: a build to an OCI archive with `--progress rawjson`, and the build
checks (`buildctl … --opt requestid=frontend.lint`, BuildKit's `docker build --call=check`; `workbench check`).
Compared, each a column of the table:

  outcome  both built, or both failed the same way: both at a step, with no step failing on one side and
           succeeding on the other (which of several failing steps runs first is scheduling), or both before
           any step with the same error text. "Both fail the same way" is agreement, not a difference
  image    config fields and the whole file tree (tests/conformance/ocitree.py), when both built
  checks   the warnings as (rule, line) pairs, and the error the checks stopped on (if any)
  ctext    the check text itself (BuildKit's result.txt against `workbench check` without its header line),
           when the checks agree
  names    the sorted vertex names of the build (a vertex in a progress group by the group's name, as BuildKit's
           printers show it); on a failed build, the names one side started that the other
           never announced, and (in the summary) how often BuildKit announced steps it never started

BuildKit builds run one at a time (workbench's may overlap them, --jobs): concurrent BuildKit solves share the
identical base FROM vertex and report it under the other build's name. Oracle results are kept in --cache-dir
(default /tmp/differential-cache), keyed by the case's rewritten Dockerfile, context and options, so a rerun
only rebuilds with workbench (--refresh-oracle to rebuild both); --json saves every raw result and
--recompare FILE compares a saved run again without building.
Prints one row per case with a difference, then a summary of how many cases differ in each column.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "conformance"))
import ocitree  # noqa: E402

BASE = "localhost:5055/busybox"
TIMEOUT = 300
ORACLE_LOCK = threading.Lock()
FORMAT = "6"  # of the cached oracle results: bump when oracle() records something new
COLUMNS = ["outcome", "image", "checks", "ctext", "names"]

# --- rewriting ------------------------------------------------------------------------------------------

_FROM = re.compile(r"^(\s*FROM\s+)((?:--\S+\s+)*)(\S+)(.*)$", re.I)
_AS = re.compile(r"\s+AS\s+(\S+)", re.I)
_ARG = re.compile(r"^\s*ARG\s+(.*)$", re.I)
_COPY_FROM = re.compile(r"(--from=)(\"?)([^\s\"]+)(\"?)", re.I)
_MOUNT_FROM = re.compile(r"(--mount=\S*?\bfrom=)([^,\s]+)", re.I)
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}?")


def _global_args(lines: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for line in lines:
        if _FROM.match(line):
            break
        m = _ARG.match(line)
        if m:
            for item in m.group(1).split():
                k, _, v = item.partition("=")
                args[k] = v.strip("\"'")
    return args


def _expand(ref: str, args: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        v = args.get(m.group(1), "")
        inner = m.group(0)
        if not v and ":-" in inner:
            v = inner.split(":-", 1)[1].rstrip("}")
        return v
    return _VAR.sub(one, ref)


def rewrite(text: str) -> str:
    """Point every external image of a Dockerfile at the local base, line for line (see the module doc)."""
    lines = text.split("\n")
    stages = {m.group(1).lower() for line in lines if _FROM.match(line) for m in [_AS.search(line)] if m}
    args = _global_args(lines)

    def external(ref: str) -> bool:
        name = _expand(ref, args).lower() if "$" in ref else ref.lower()
        return name not in stages and name != "scratch" and not name.isdigit() and name != BASE \
            and not name.startswith(BASE + ":") and not name.startswith(BASE + "@")

    out = []
    for line in lines:
        m = _FROM.match(line)
        if m and external(m.group(3)):
            line = m.group(1) + m.group(2) + BASE + m.group(4)
        elif re.match(r"^\s*(COPY|ADD)\s", line, re.I):
            line = _COPY_FROM.sub(lambda c: c.group(1) + c.group(2) + (
                BASE if "$" not in c.group(3) and external(c.group(3)) else c.group(3)) + c.group(4), line, count=1)
        if "--mount=" in line:
            line = _MOUNT_FROM.sub(lambda c: c.group(1) + (
                BASE if "$" not in c.group(2) and external(c.group(2)) else c.group(2)), line)
        out.append(line)
    return "\n".join(out)


# --- cases ----------------------------------------------------------------------------------------------

class Case:
    """One Dockerfile to build: prepared in a work folder as work/df/Dockerfile and work/context."""

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path.rstrip("/"))
        if os.path.isdir(path):
            self.dockerfile = os.path.join(path, "Dockerfile")
            ctx = os.path.join(path, "context")
            self.context = ctx if os.path.isdir(ctx) else None
            meta = os.path.join(path, "case.json")
            self.meta: dict[str, Any] = json.load(open(meta)) if os.path.exists(meta) else {}
        else:
            self.dockerfile, self.context, self.meta = path, None, {}

    def prepare(self, work: str, do_rewrite: bool) -> tuple[str, str]:
        dfdir, ctx = os.path.join(work, "df"), os.path.join(work, "context")
        os.makedirs(dfdir)
        with open(self.dockerfile, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        with open(os.path.join(dfdir, "Dockerfile"), "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(rewrite(text) if do_rewrite else text)
        if self.context:
            shutil.copytree(self.context, ctx, symlinks=True)
        else:
            os.makedirs(ctx)
        return dfdir, ctx

    def key(self, dfdir: str, ctx: str, oracle_id: str) -> str:
        h = hashlib.sha256((FORMAT + oracle_id).encode())
        h.update(json.dumps({k: v for k, v in self.meta.items() if k in ("args", "target", "secrets", "allow")},
                            sort_keys=True).encode())
        for top in (dfdir, ctx):
            for d, dirs, files in sorted(os.walk(top)):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(d, f)
                    h.update(os.path.relpath(p, top).encode() + b"\0")
                    h.update(os.readlink(p).encode() if os.path.islink(p) else open(p, "rb").read())
        return h.hexdigest()


def find_cases(args: list[str]) -> list[Case]:
    out = []
    for a in args:
        if os.path.isfile(a) or os.path.isfile(os.path.join(a, "Dockerfile")):
            out.append(Case(a))
            continue
        for e in sorted(os.listdir(a)):
            p = os.path.join(a, e)
            if os.path.isfile(os.path.join(p, "Dockerfile")) or (os.path.isfile(p) and not e.startswith(".")):
                out.append(Case(p))
    return out


# --- running the builders -------------------------------------------------------------------------------

TRANSIENT = ("500 Internal Server Error", "503 Service Unavailable", "connection reset by peer")


def run(cmd: list[str]) -> tuple[int, str, str]:
    """Run a builder; once more when the local registry answered with a transient error."""
    for attempt in range(2):
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return 124, "", f"timed out after {TIMEOUT}s"
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        if p.returncode == 0 or attempt or not any(t in out + err for t in TRANSIENT):
            break
        time.sleep(2)
    return p.returncode, out, err


def progress(stream: str) -> dict[str, Any]:
    """Vertex names (all announced, those started) and failed vertices from a rawjson progress stream."""
    last: dict[str, dict[str, Any]] = {}  # a vertex is sent again as it changes: its last record counts
    for line in stream.splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        for v in doc.get("vertexes") or []:
            # each record is the vertex's whole state; a vertex in a progress group (BuildKit's `LINK COPY`
            # half of a COPY --link) is printed as its group, by name
            group = (v.get("progressGroup") or {}).get("name")
            last[v.get("digest") or v.get("name", "")] = {**v, "name": group} if group else v
    announced = {v.get("name", "") for v in last.values()}
    started = {v.get("name", "") for v in last.values() if v.get("started")}
    failed = {v.get("name", "") for v in last.values() if v.get("error") and "canceled" not in v["error"]}
    # BuildKit marks a step `cached` while it probes the cache, even one that then fails: only a real run counts
    done = {v.get("name", "") for v in last.values()
            if v.get("completed") and not v.get("error") and not v.get("cached")}
    return {"announced": sorted(announced), "started": sorted(started), "failed": sorted(failed),
            "completed": sorted(done)}


def error_line(text: str) -> str:
    """The builder's closing error, without its `error:`/`ERROR:` prefix and `failed to solve:`."""
    for line in reversed(text.strip().splitlines()):
        m = re.match(r"^(?:error|ERROR):\s*(.*)$", line)
        if m:
            return re.sub(r"^failed to solve:\s*", "", m.group(1)).strip()
    return ""


def describe(out: str) -> dict[str, Any] | None:
    try:
        return ocitree.describe(out)
    except Exception as e:  # an unreadable archive is itself a result worth showing
        return {"unreadable": str(e)}


_LOC = re.compile(r"^(\S+):(\d+)(?:-\d+)?$")


def parse_checks(text: str) -> list[list[Any]]:
    """(rule, line) of every warning in BuildKit's check text; line 0 for a warning with no location."""
    found = []
    blocks = re.split(r"^WARNING: ", text, flags=re.M)[1:]
    for b in blocks:
        lines = b.splitlines()
        rule = lines[0].split(" - ")[0].strip()
        line = 0
        for i, ln in enumerate(lines[1:], 1):
            if ln.startswith("----") and i >= 2:
                m = _LOC.match(lines[i - 1])
                line = int(m.group(2)) if m else 0
                break
        found.append([rule, line])
    return sorted(found)


def check_text(text: str) -> str:
    """The warnings part of a check output: no `Check complete` header, nothing from the error on."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("Check complete")]
    for i, ln in enumerate(lines):
        if re.match(r"^(error|ERROR):", ln):
            # workbench prints the error's source snippet first: cut from the last warning's end
            lines = lines[:i]
            while lines and not lines[-1].startswith("----"):
                lines.pop()
            break
    return "\n".join(lines).strip("\n")


def oracle(case: Case, dfdir: str, ctx: str, o: argparse.Namespace, work: str) -> dict[str, Any]:
    base = [o.buildctl, "--addr", o.addr, "build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}",
            "--local", f"dockerfile={dfdir}", "--opt", "cmdline=builtin"]
    for k, v in case.meta.get("args", {}).items():
        base += ["--opt", f"build-arg:{k}={v}"]
    if "target" in case.meta:
        base += ["--opt", f"target={case.meta['target']}"]
    for sid, src in case.meta.get("secrets", {}).items():
        base += ["--secret", f"id={sid},src={os.path.join(case.path, src)}"]
    for a in case.meta.get("allow", []):
        base += ["--allow", a]
    out = os.path.join(work, "bk.tar")
    rc, _, err = run(base + ["--output", f"type=oci,dest={out}", "--progress", "rawjson"])
    res: dict[str, Any] = {"ok": rc == 0, "error": "" if rc == 0 else error_line(err) or err[-300:],
                           "progress": progress(err), "image": describe(out) if rc == 0 else None}
    crc, cout, cerr = run(base + ["--opt", "requestid=frontend.lint", "--progress", "plain"])
    res["check_text"] = check_text(cout) if crc == 0 else ""
    res["checks"] = parse_checks(cout) if crc == 0 else []
    # buildctl prints only the warnings; the lint's own error is the conversion error the build stopped on
    conv_failed = not res["ok"] and not any(n for n in res["progress"]["failed"] if not n.startswith("[internal]")) \
        and not res["error"].startswith(("failed to load LLB", "timed out"))  # those come after the conversion
    res["check_error"] = res["error"] if conv_failed else (error_line(cerr) if crc else "")
    return res


def workbench(case: Case, dfdir: str, ctx: str, o: argparse.Namespace, work: str) -> dict[str, Any]:
    wb = o.wb.split()
    df = os.path.join(dfdir, "Dockerfile")
    opts = ["-f", df]
    for k, v in case.meta.get("args", {}).items():
        opts += ["--build-arg", f"{k}={v}"]
    if "target" in case.meta:
        opts += ["--target", case.meta["target"]]
    build = list(opts)
    for sid, src in case.meta.get("secrets", {}).items():
        build += ["--secret", f"id={sid},src={os.path.join(case.path, src)}"]
    for a in case.meta.get("allow", []):
        build += ["--allow", a]
    if "cdi" in case.meta:
        build += ["--cdi-spec-dir", os.path.join(case.path, case.meta["cdi"])]
    out = os.path.join(work, "wb.tar")
    rc, sout, err = run(wb + ["build", ctx, *build, "--root", o.wb_root, "--output", f"type=oci,dest={out}",
                              "--progress", "rawjson"])
    res: dict[str, Any] = {"ok": rc == 0, "error": "" if rc == 0 else error_line(sout + err) or (sout + err)[-300:],
                           "progress": progress(err), "image": describe(out) if rc == 0 else None}
    crc, cout, cerr = run(wb + ["check", ctx, *opts, "--root", o.wb_root])
    text = cout + cerr
    res["check_text"] = check_text(cout)
    res["checks"] = parse_checks(cout)
    res["check_error"] = error_line(text) if crc != 0 else ""
    if crc not in (0, 1) and not res["check_error"]:
        res["check_error"] = f"exit {crc}: " + (text.strip().splitlines() or [""])[-1]
    return res


# --- comparing ------------------------------------------------------------------------------------------

def _norm_error(e: str) -> str:
    e = re.sub(r"^timed out after \d+s$", "timed out", e.strip())  # the two sides' limits may differ
    return re.sub(r"\s+", " ", e).strip()


def _steps(names: list[str]) -> set[str]:
    """Step names without their `[stage n/N]` prefix, leaving out BuildKit's `[internal]` vertices."""
    return {re.sub(r"^\[[^\]]*\]\s*", "", n) for n in names if not n.startswith("[internal]")}


def compare(bk: dict[str, Any], wb: dict[str, Any]) -> dict[str, list[str]]:
    """The differences between one case's BuildKit and workbench results, by column."""
    d: dict[str, list[str]] = {c: [] for c in COLUMNS}
    bkp, wbp = bk["progress"], wb["progress"]
    if bk["ok"] != wb["ok"]:
        d["outcome"].append(f"buildkit {'built' if bk['ok'] else 'failed: ' + bk['error']} | "
                            f"workbench {'built' if wb['ok'] else 'failed: ' + wb['error']}")
    elif not bk["ok"]:
        fb, fw = _steps(bkp["failed"]), _steps(wbp["failed"])
        if fb and fw:  # which of several failing steps runs first is scheduling: differ only on a contradiction
            wrong = (fb & _steps(wbp["completed"])) | (fw & _steps(bkp["completed"]))
            if wrong:
                d["outcome"].append(f"a step fails on one side and succeeds on the other: {sorted(wrong)}; "
                                    f"buildkit {bk['error']!r} | workbench {wb['error']!r}")
        elif fb or fw:
            d["outcome"].append(f"buildkit {'step' if fb else 'conversion'} error {bk['error']!r} | "
                                f"workbench {'step' if fw else 'conversion'} error {wb['error']!r}")
        elif _norm_error(bk["error"]) != _norm_error(wb["error"]):
            d["outcome"].append(f"error: buildkit {bk['error']!r} | workbench {wb['error']!r}")
    if bk["ok"] and wb["ok"]:
        bi, wi = bk["image"] or {}, wb["image"] or {}
        if "unreadable" in wi or "unreadable" in bi:
            d["image"].append(f"unreadable archive: buildkit {bi.get('unreadable')} | workbench {wi.get('unreadable')}")
        else:
            for k in sorted(set(bi["config"]) | set(wi["config"])):
                if bi["config"].get(k) != wi["config"].get(k):
                    d["image"].append(f"config {k}: buildkit {bi['config'].get(k)!r} | "
                                      f"workbench {wi['config'].get(k)!r}")
            bt, wt = bi["tree"], wi["tree"]
            for p in sorted(set(bt) | set(wt)):
                if bt.get(p) != wt.get(p):
                    d["image"].append(f"{p}: buildkit {bt.get(p)!r} | workbench {wt.get(p)!r}")
    if bk["checks"] != wb["checks"]:
        bs, ws = bk["checks"], wb["checks"]
        d["checks"].append(f"only buildkit {[c for c in bs if c not in ws]} | "
                           f"only workbench {[c for c in ws if c not in bs]}")
    if bool(bk["check_error"]) != bool(wb["check_error"]) or (
            bk["check_error"] and _norm_error(bk["check_error"]) != _norm_error(wb["check_error"])):
        d["checks"].append(f"check error: buildkit {bk['check_error']!r} | workbench {wb['check_error']!r}")
    if not d["checks"] and bk["check_text"] != wb["check_text"]:
        bl, wl = bk["check_text"].splitlines(), wb["check_text"].splitlines()
        i = next((i for i, (a, b) in enumerate(zip(bl, wl, strict=False)) if a != b), min(len(bl), len(wl)))
        d["ctext"].append(f"line {i + 1}: buildkit {bl[i] if i < len(bl) else '<end>'!r} | "
                          f"workbench {wl[i] if i < len(wl) else '<end>'!r}")
    if bk["ok"] and wb["ok"]:
        bn, wn = set(bkp["announced"]), set(wbp["announced"])
    else:  # which steps start before the failure depends on scheduling: compare only what one side never names
        bn = set(bkp["started"]) - set(wbp["announced"])
        wn = set(wbp["started"]) - set(bkp["announced"])
    if bn != wn:
        d["names"].append(f"only buildkit {sorted(bn - wn)} | only workbench {sorted(wn - bn)}")
    return {k: v for k, v in d.items() if v}


# --- driver ---------------------------------------------------------------------------------------------

def one(case: Case, o: argparse.Namespace, oracle_id: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="differential-") as work:
        dfdir, ctx = case.prepare(work, not o.no_rewrite)
        key = case.key(dfdir, ctx, oracle_id)
        cached = os.path.join(o.cache_dir, key + ".json")
        if os.path.exists(cached) and not o.refresh_oracle:
            bk = json.load(open(cached))
        else:
            # one BuildKit build at a time: concurrent solves share identical vertices (the base's FROM), and
            # a shared vertex is reported under the name the other build gave it
            with ORACLE_LOCK:
                bk = oracle(case, dfdir, ctx, o, work)
                time.sleep(o.oracle_pause)  # buildkitd drops a finished solve's vertices a moment after buildctl exits
            os.makedirs(o.cache_dir, exist_ok=True)
            with open(cached + ".tmp", "w") as f:
                json.dump(bk, f)
            os.replace(cached + ".tmp", cached)
        wb = workbench(case, dfdir, ctx, o, work)
    return summarize({"case": case.name, "path": case.path, "bk": bk, "wb": wb})


def guarded(case: Case, o: argparse.Namespace, oracle_id: str) -> dict[str, Any]:
    """one(), with a failure of the harness itself reported as that case's difference, not a crash."""
    try:
        return one(case, o, oracle_id)
    except Exception as e:
        return {"case": case.name, "path": case.path, "bk_ok": False, "wb_ok": False,
                "diff": {"outcome": [f"harness error: {type(e).__name__}: {e}"]}, "bk_unstarted": [],
                "wb_announces_unstarted": False}


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    bk, wb = r["bk"], r["wb"]
    unstarted = sorted(set(bk["progress"]["announced"]) - set(bk["progress"]["started"])) if not bk["ok"] else []
    r.update(bk_ok=bk["ok"], wb_ok=wb["ok"], diff=compare(bk, wb), bk_unstarted=unstarted,
             wb_announces_unstarted=bool(set(unstarted) & set(wb["progress"]["announced"])))
    return r


def show(r: dict[str, Any], verbose: bool) -> None:
    if not r["diff"]:
        print(f"SAME {r['case']} ({'built' if r['bk_ok'] else 'both failed'})", flush=True)
        return
    cols = " ".join(c if c in r["diff"] else "-" * len(c) for c in COLUMNS)
    print(f"DIFF {cols}  {r['case']}", flush=True)
    for col, lines in r["diff"].items():
        for line in lines if verbose else lines[:3]:
            print(f"     {col:7} {line[:400]}")
        if not verbose and len(lines) > 3:
            print(f"     {col:7} … {len(lines) - 3} more")


def main() -> int:
    global TIMEOUT
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly
    ap = argparse.ArgumentParser(description="Compare workbench with BuildKit on a set of Dockerfiles.",
                                 epilog="See the module docstring (head of this file) for the setup.")
    ap.add_argument("paths", nargs="*", help="case folders, single Dockerfiles, or folders of them")
    ap.add_argument("--buildctl", default=os.environ.get("BUILDCTL", "/tmp/bk/buildctl"))
    ap.add_argument("--addr", default=os.environ.get("BUILDKIT_ADDR", "unix:///tmp/bk/buildkitd.sock"))
    ap.add_argument("--wb", default=os.environ.get("WB", os.path.join(ROOT, ".venv", "bin", "workbench")))
    ap.add_argument("--wb-root", default="/tmp/differential-wbroot", help="workbench --root for these builds")
    ap.add_argument("--cache-dir", default="/tmp/differential-cache", help="where oracle results are kept")
    ap.add_argument("--refresh-oracle", action="store_true", help="rebuild with BuildKit even when cached")
    ap.add_argument("--no-rewrite", action="store_true", help="build the Dockerfiles as they are")
    ap.add_argument("--only", help="only cases whose name matches this regex")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--oracle-pause", type=float, default=0.5,
                    help="seconds to wait after each BuildKit build, so the next one cannot inherit its vertex names")
    ap.add_argument("--timeout", type=int, default=TIMEOUT,
                    help="seconds a build may take (both builders timing out is agreement)")
    ap.add_argument("--json", help="write every case's result to this file")
    ap.add_argument("--recompare", metavar="JSON", help="compare again the raw results a --json run saved "
                    "(no building; paths are then ignored)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every difference line, not the first 3")
    o = ap.parse_args()
    TIMEOUT = o.timeout
    results: list[dict[str, Any]] = []
    if o.recompare:
        for r in json.load(open(o.recompare)):
            if "bk" in r and (not o.only or re.search(o.only, r["case"])):
                results.append(summarize(r))
                show(r, o.verbose)
    else:
        rc, _, err = run([o.buildctl, "--addr", o.addr, "debug", "workers"])
        if rc != 0:
            print(f"differential: the oracle is not reachable ({o.buildctl} --addr {o.addr}): "
                  f"{(err.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
            return 2
        oracle_id = run([o.buildctl, "--version"])[1].strip()
        cases = [c for c in find_cases(o.paths) if not o.only or re.search(o.only, c.name)]
        with concurrent.futures.ThreadPoolExecutor(max(1, o.jobs)) as pool:
            for r in pool.map(lambda c: guarded(c, o, oracle_id), cases):
                results.append(r)
                show(r, o.verbose)
    n = len(results)
    same = sum(not r["diff"] for r in results)
    print(f"\n{n} cases: {same} agree, {n - same} differ "
          f"(BuildKit built {sum(r['bk_ok'] for r in results)}, workbench built {sum(r['wb_ok'] for r in results)})")
    for c in COLUMNS:
        print(f"  {c:8} {sum(c in r['diff'] for r in results):4} cases differ")
    missing = sum(bool(r["bk_unstarted"]) and not r["wb_announces_unstarted"] for r in results)
    print(f"  failed builds where BuildKit announced steps it never started and workbench did not: {missing}")
    if o.json:
        with open(o.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if same == n else 1


if __name__ == "__main__":
    sys.exit(main())
