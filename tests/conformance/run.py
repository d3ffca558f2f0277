#!/usr/bin/env python3
"""Dockerfile conformance: build each case with a builder, compare the image it exports.

  run.py oracle CASES_DIR   build every case with BuildKit (env BUILDCTL, BUILDKIT_ADDR) and write
                            CASE/expected.json
  run.py check CASES_DIR    build every case with the workbench (env WB, default `workbench`) and compare
                            with CASE/expected.json; prints one line a case and `N passed, M failed`

A case is a folder: Dockerfile, context/ (the build context), optional case.json:
  {"args": {"K": "V"}, "target": "stage", "secrets": {"id": "file in case dir"},
   "allow": ["device=vendor.com/x"], "cdi": "cdi dir in case dir", "fails": true,
   "error_pattern": "a regex the failed build's output must match"}
Every case builds FROM localhost:5055/busybox, a registry that `registry.sh` starts and fills.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ocitree  # noqa: E402

BASE_TAR = os.environ.get("BASE_TAR") or (  # where registry.sh leaves the base image
    "/tmp/conformance-registry/busybox.tar" if os.path.exists("/tmp/conformance-registry/busybox.tar") else "")


def load_case(case):
    meta = {}
    p = os.path.join(case, "case.json")
    if os.path.exists(p):
        meta = json.load(open(p))
    return meta


def buildkit_cmd(case, meta, out):
    cmd = [os.environ["BUILDCTL"], "--addr", os.environ["BUILDKIT_ADDR"], "build",
           "--frontend", "dockerfile.v0", "--local", f"context={case}/context", "--local", f"dockerfile={case}",
           "--output", f"type=oci,dest={out}", "--progress", "plain"]
    for k, v in meta.get("args", {}).items():
        cmd += ["--opt", f"build-arg:{k}={v}"]
    if "target" in meta:
        cmd += ["--opt", f"target={meta['target']}"]
    for sid, src in meta.get("secrets", {}).items():
        cmd += ["--secret", f"id={sid},src={case}/{src}"]
    for a in meta.get("allow", []):
        cmd += ["--allow", a]
    return cmd


def workbench_cmd(case, meta, out):
    cmd = os.environ.get("WB", "workbench").split() + [
        "build", f"{case}/context", "-f", f"{case}/Dockerfile", "--output", f"type=oci,dest={out}",
        "--progress", "plain"]
    for k, v in meta.get("args", {}).items():
        cmd += ["--build-arg", f"{k}={v}"]
    if "target" in meta:
        cmd += ["--target", meta["target"]]
    for sid, src in meta.get("secrets", {}).items():
        cmd += ["--secret", f"id={sid},src={case}/{src}"]
    for a in meta.get("allow", []):
        cmd += ["--allow", a]
    if "cdi" in meta:
        cmd += ["--cdi-spec-dir", f"{case}/{meta['cdi']}"]
    return cmd


def build(cmd, out):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        return None, (p.stdout + p.stderr)[-1500:], dt
    return ocitree.describe(out), "", dt


def base_tree():
    return ocitree.describe(BASE_TAR)["tree"] if BASE_TAR else {}


def cases(root):
    return sorted(os.path.join(root, c) for c in os.listdir(root)
                  if os.path.exists(os.path.join(root, c, "Dockerfile")))


def oracle(root):
    bt = base_tree()
    for case in cases(root):
        meta = load_case(case)
        with tempfile.TemporaryDirectory() as td:
            out = os.path.join(td, "out.tar")
            desc, err, _ = build(buildkit_cmd(case, meta, out), out)
        if desc is None:
            expected = {"fails": True, "error": err.strip().splitlines()[-1] if err.strip() else ""}
        else:
            expected = ocitree.against_base(desc, bt)
        if bool(meta.get("fails")) != bool(expected.get("fails")):
            print(f"WARN {os.path.basename(case)}: case.json fails={meta.get('fails')} but BuildKit says {expected.get('fails')}: {err[-300:]}")
        with open(os.path.join(case, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1, sort_keys=True)
        print(os.path.basename(case), "fails" if expected.get("fails") else f"{len(expected['changed'])} changed")


def diff(expected, got):
    lines = []
    for k in sorted(set(expected["config"]) | set(got["config"])):
        if expected["config"].get(k) != got["config"].get(k):
            lines.append(f"config {k}: want {expected['config'].get(k)!r} got {got['config'].get(k)!r}")
    e, g = expected["changed"], got["changed"]
    for p in sorted(set(e) | set(g)):
        if e.get(p) != g.get(p):
            lines.append(f"{p}: want {e.get(p)!r} got {g.get(p)!r}")
    if sorted(expected["removed"]) != sorted(got["removed"]):
        lines.append(f"removed: want {expected['removed']} got {got['removed']}")
    return lines


def check(root, verbose):
    bt = base_tree()
    passed = failed = 0
    for case in cases(root):
        meta = load_case(case)
        name = os.path.basename(case)
        expected = json.load(open(os.path.join(case, "expected.json")))
        with tempfile.TemporaryDirectory() as td:
            out = os.path.join(td, "out.tar")
            try:
                desc, err, dt = build(workbench_cmd(case, meta, out), out)
            except subprocess.TimeoutExpired:
                desc, err, dt = None, "timed out", 300.0
            except Exception as e:  # an unreadable export counts as a failure of this case
                desc, err, dt = None, f"export unreadable: {e}", 0.0
        if expected.get("fails"):
            pattern = meta.get("error_pattern")
            ok = desc is None and (not pattern or re.search(pattern, err, re.I) is not None)
            why = ["built, but BuildKit fails this case: " + expected.get("error", "")] if desc is not None else \
                [f"failed, but the error does not match /{pattern}/: " + err.strip().replace("\n", " | ")[-300:]]
        elif desc is None:
            ok, why = False, ["failed: " + err.strip().replace("\n", " | ")[-400:]]
        else:
            why = diff(expected, ocitree.against_base(desc, bt))
            ok = not why
        passed += ok
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name} ({dt:.2f}s)")
        if not ok and verbose:
            for line in why[:12]:
                print("     ", line)
    print(f"{passed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "oracle":
        oracle(root)
    else:
        sys.exit(0 if check(root, "-q" not in sys.argv) else 1)
