#!/usr/bin/env python3
"""Issue 21's benchmark: w1 and w3 (bench/run.py's workloads) built as root and rootless on the same machine.

Both sides run the same interpreter and code (/usr/bin/python3 with the repo and the venv's packages, as the
rootless tests do: the venv's python is not reachable by other users); the only difference is the user. The
rootless side is `wbtest` (created, with subordinate ranges, as tests/rootless/conftest.py does). Each side has
a build server of its own on a private socket (WORKBENCH_SERVER_SOCKET), so servers of other helpers are never
touched. cold: a fresh state root and a freshly started server; warm: the same build again (3 times). Root and
rootless runs are interleaved so that the machine's load falls on both alike; the load average is printed.

Usage (as root): .venv/bin/python bench/rootless.py [--repeat N] [--only w1,w3] [--verbose]
Needs the local registry (sh tests/conformance/registry.sh).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import WORKLOADS  # noqa: E402
from tests.rootless.conftest import PYTHON, RootlessUser, _set_subids  # noqa: E402

TARGET = 1.3


class Side:
    """One way of running workbench: as root or as the rootless user, with its own server socket and roots."""

    def __init__(self, name: str, user: RootlessUser, top: Path, as_root: bool) -> None:
        self.name, self.user, self.top, self.as_root = name, user, top, as_root
        # bytecode caches as an installed CLI has them (the fixture's env turns them off; empty means unset)
        self.env = {"WORKBENCH_SERVER_SOCKET": str(top / "run" / "server.sock"), "PYTHONDONTWRITEBYTECODE": ""}
        if not as_root:
            self.env["XDG_RUNTIME_DIR"] = str(top / "run")

    def argv(self, args: Sequence[str]) -> list[str]:
        cli = [PYTHON, "-m", "workbench.cli", *args]
        if self.as_root:
            return ["env", "-i", *(f"{k}={v}" for k, v in self.user.env(self.env).items()
                                   if k not in ("HOME", "USER", "LOGNAME")),
                    "HOME=/root", *cli]
        return self.user.command(cli, self.env)

    def run(self, args: Sequence[str], check: bool = False) -> int:
        return subprocess.run(self.argv(args), cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=check).returncode

    def build(self, ctx: Path, root: Path) -> float:
        t = time.perf_counter()
        proc = subprocess.run(self.argv(["build", "--root", str(root), "--progress", "plain", str(ctx)]), cwd="/",
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode:
            sys.exit(f"{self.name} build of {ctx} failed: {proc.stderr.strip()[-500:]}")
        return time.perf_counter() - t

    def restart_server(self) -> None:
        """A fresh server, up before anything is timed (as bench/run.py's start_server)."""
        self.run(["server", "stop"])
        self.run(["build", "--root", "/nonexistent/root", "/nonexistent/ctx"])
        deadline = time.monotonic() + 30
        while self.run(["server", "status"]) != 0:
            if time.monotonic() > deadline:
                sys.exit(f"the {self.name} build server did not start")
            time.sleep(0.1)


def rootless_user(name: str = "wbtest") -> RootlessUser:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    _set_subids(name, ranges=True)
    pw = pwd.getpwnam(name)
    return RootlessUser(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root: it builds as root and as the user wbtest")
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="w1,w3")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    user = rootless_user()
    top = user.mkdir(f"bench-{os.getpid()}")  # wbtest's, 0755: root's roots live in it too (same filesystem)
    sides = [Side("root", user, top / "root", as_root=True), Side("rootless", user, top / "rootless", as_root=False)]
    for side in sides:
        (side.top / "run").mkdir(parents=True, mode=0o700)
        if not side.as_root:
            for p in (side.top, side.top / "run"):
                os.chown(p, user.uid, user.gid)
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"{'workload':<34}{'root cold':>10}{'rl cold':>9}{'ratio':>7}{'root warm':>11}{'rl warm':>9}{'ratio':>7}")
    try:
        for key in args.only.split(","):
            title, make = WORKLOADS[key]
            ctx = top / f"{key}-ctx"
            make(ctx)
            for p in [ctx, *ctx.rglob("*")]:
                os.chown(p, user.uid, user.gid)
            cold: dict[str, list[float]] = {s.name: [] for s in sides}
            warm: dict[str, list[float]] = {s.name: [] for s in sides}
            for n in range(args.repeat):
                for side in sides if n % 2 == 0 else sides[::-1]:  # interleaved, alternating who goes first
                    root = side.top / f"{key}-root{n}"
                    side.restart_server()
                    os.sync()
                    cold[side.name].append(side.build(ctx, root))
                    os.sync()
                    warm[side.name] += [side.build(ctx, root) for _ in range(3)]
            c = {k: statistics.median(v) for k, v in cold.items()}
            w = {k: statistics.median(v) for k, v in warm.items()}
            if args.verbose:
                for s in sides:
                    print(f"  {key} {s.name} cold: {' '.join(f'{t:.2f}' for t in cold[s.name])}; "
                          f"warm: {' '.join(f'{t:.3f}' for t in warm[s.name])}")
            rc, rw = c["rootless"] / c["root"], w["rootless"] / w["root"]
            print(f"{key + ' ' + title:<34}{c['root']:>10.2f}{c['rootless']:>9.2f}{rc:>6.2f}x"
                  f"{w['root']:>11.3f}{w['rootless']:>9.3f}{rw:>6.2f}x"
                  f"{'' if max(rc, rw) <= TARGET else f'  over {TARGET}x'}", flush=True)
    finally:
        for side in sides:
            side.run(["server", "stop"])
        la = os.getloadavg()
        print(f"load average at end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
