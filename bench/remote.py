#!/usr/bin/env python3
"""Issue 20's speed item: w1 and w3 (bench/run.py) built by `workbench build --addr` and by the daemon's own
client, against the same daemon, cold and warm; prints medians and ours/theirs ratios (target ≤ 1.2×).

  --engine buildkitd   a buildkitd of this run (/tmp/bk/buildkitd, its own --root and socket, so pruning it
                       touches no one else's cache), driven by /tmp/bk/buildctl
  --engine docker      a Docker 20.10 daemon of this run (tests/docker_daemon.py), driven by Debian's docker
                       CLI (`docker build`, DOCKER_BUILDKIT=1)

cold: the daemon's build cache pruned first (`buildctl prune --all`; `docker builder prune -af` and the images
of earlier runs removed) and, for ours, a fresh state root; warm: the same build again (all CACHED). Theirs
and ours take turns in each round. Ours runs as a user's build does: handed to the resident build server (its
own socket here, started before anything is timed, as the daemon is), whose forked child talks to the daemon;
--no-server builds in the CLI process instead.
On buildkitd nothing is exported (buildctl build without --output); on Docker both sides tag the image (the
moby exporter: `docker build` always exports). Needs the local registry (sh tests/conformance/registry.sh).
--baseline DIR also times ours from the source tree DIR (a `git worktree` of an earlier commit), through its
own build server, taking turns with the others: a before/after in the same minutes on a shared machine.

Usage: .venv/bin/python bench/remote.py --engine buildkitd|docker [--frontend dockerfile.v0|graph]
       [--repeat N] [--only w1,w3] [--no-server] [--baseline DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.run import WORKLOADS  # noqa: E402

WORKBENCH = str(Path(sys.executable).parent / "workbench")
BUILDKITD, BUILDCTL, BUILDKITD_CONFIG = "/tmp/bk/buildkitd", "/tmp/bk/buildctl", "/tmp/bk/buildkitd.toml"
DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 CLI: its own BuildKit client, no buildx plugin needed
TARGET = 1.2
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "BUILDKIT_HOST")}


def quiet(cmd: list[str], env: dict[str, str] | None = None) -> None:
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env or ENV)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    quiet(cmd, env)
    return time.perf_counter() - t


class Daemon:
    """One daemon, its own client's build command, ours, and how its cache is pruned."""

    addr: str

    def theirs(self, ctx: Path, tag: str) -> list[str]:
        raise NotImplementedError

    def ours_extra(self, tag: str) -> list[str]:
        return []

    def prune(self) -> None:
        raise NotImplementedError

    env: dict[str, str] = ENV


class BuildkitdDaemon(Daemon):
    def __init__(self, sock: Path) -> None:
        self.addr = f"unix://{sock}"

    def theirs(self, ctx: Path, tag: str) -> list[str]:
        return [BUILDCTL, "--addr", self.addr, "build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}",
                "--local", f"dockerfile={ctx}", "--progress", "plain"]

    def prune(self) -> None:
        quiet([BUILDCTL, "--addr", self.addr, "prune", "--all"])


class DockerDaemonBench(Daemon):
    def __init__(self, sock: Path) -> None:
        self.addr = f"docker://{sock}"
        self.env = {**ENV, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "1"}

    def theirs(self, ctx: Path, tag: str) -> list[str]:
        # the daemon has no bridge (tests/docker_daemon.py): steps run on the host network, as ours do
        return [DOCKER_CLI, "build", "--progress", "plain", "--network", "host", "-t", f"bench/{tag}:theirs",
                str(ctx)]

    def ours_extra(self, tag: str) -> list[str]:
        return ["-t", f"bench/{tag}:ours"]

    def prune(self) -> None:
        images = subprocess.run([DOCKER_CLI, "images", "-q", "bench/*"], capture_output=True, text=True,
                                env=self.env).stdout.split()
        if images:
            quiet([DOCKER_CLI, "rmi", "-f", *sorted(set(images))], self.env)
        quiet([DOCKER_CLI, "builder", "prune", "-af"], self.env)


@contextmanager
def build_server(top: Path, env: dict[str, str] = ENV, name: str = "srv") -> Iterator[None]:
    """Our resident build server (of the code `env` imports) on a socket of this run (set in `env`), up before
    anything is timed; stopped at the end."""
    env["WORKBENCH_SERVER_SOCKET"] = str(top / name / "server.sock")
    subprocess.run([WORKBENCH, "build", "--progress", "nonsense", "."], env=env, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([WORKBENCH, "server", "status"], env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit("the build server did not start")
            time.sleep(0.1)
        yield
    finally:
        subprocess.run([WORKBENCH, "server", "stop"], env=env, capture_output=True)


@contextmanager
def buildkitd(top: Path) -> Iterator[Daemon]:
    base = top / "bkd"
    base.mkdir()
    sock = base / "buildkitd.sock"
    log = open(base / "buildkitd.log", "wb")
    proc = subprocess.Popen([BUILDKITD, "--root", str(base / "state"), "--addr", f"unix://{sock}",
                             "--oci-worker-net=host", "--config", BUILDKITD_CONFIG,
                             "--allow-insecure-entitlement", "network.host"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([BUILDCTL, "--addr", f"unix://{sock}", "debug", "workers"],
                             capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("buildkitd did not start:\n" + (base / "buildkitd.log").read_text()[-2000:])
            time.sleep(0.2)
        yield BuildkitdDaemon(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        subprocess.run(["umount", "-R", "-l", str(base / "state")], capture_output=True, timeout=30)


@contextmanager
def dockerd() -> Iterator[Daemon]:
    from tests.docker_daemon import start_dockerd, stop_dockerd

    proc, daemon = start_dockerd()
    try:
        yield DockerDaemonBench(daemon.socket)
    finally:
        stop_dockerd(proc, daemon)


Build = Callable[[int], tuple[list[str], dict[str, str]]]  # round -> command line, environment


def measure(daemon: Daemon, builds: list[Build], repeat: int) -> list[tuple[list[float], list[float]]]:
    """For each of `builds`: `repeat` cold builds (the daemon's cache pruned first), each followed by 3 warm
    ones; the builds take turns in each round, so a load that comes and goes on the machine hits both."""
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in builds]
    for n in range(repeat):
        for build, (cold, warm) in zip(builds, times, strict=True):
            daemon.prune()
            os.sync()
            cold.append(timed(*build(n)))
            warm += [timed(*build(n)) for _ in range(3)]
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["buildkitd", "docker"], required=True)
    ap.add_argument("--frontend", default="dockerfile.v0", help="dockerfile.v0, or graph: our own build graph")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="w1,w3")
    ap.add_argument("--no-server", action="store_true", help="ours builds in the CLI process (WORKBENCH_SERVER=0)")
    ap.add_argument("--baseline", metavar="DIR", help="also time ours from the source tree DIR, taking turns")
    ap.add_argument("--verbose", action="store_true", help="print every run's time as well")
    args = ap.parse_args()
    front = [] if args.frontend == "graph" else ["--frontend", args.frontend]
    if args.no_server:
        ENV["WORKBENCH_SERVER"] = "0"
    else:
        ENV.pop("WORKBENCH_SERVER", None)
    base_env = {**ENV, "PYTHONPATH": str(Path(args.baseline).resolve())} if args.baseline else None
    with tempfile.TemporaryDirectory(prefix="wb-bench-remote-", dir="/tmp") as tmp:
        top = Path(tmp)
        with (buildkitd(top) if args.engine == "buildkitd" else dockerd()) as daemon, \
                (nullcontext() if args.no_server else build_server(top)), \
                (nullcontext() if args.no_server or base_env is None else build_server(top, base_env, "srv-base")):
            path = f"--frontend {args.frontend}" if front else "our own graph"
            how = "in the CLI process" if args.no_server else "through the build server"
            print(f"{args.engine} at {daemon.addr}, ours with {path}, {how}")
            print(f"{'workload':<34}{'ours cold':>10}{'theirs':>8}{'ratio':>7}{'ours warm':>11}{'theirs':>8}"
                  f"{'ratio':>7}")
            over = False
            for key in args.only.split(","):
                title, make = WORKLOADS[key]
                ctx = top / key / "ctx"
                make(ctx)
                roots = top / key / "roots"

                def ours(n: int, key: str = key, ctx: Path = ctx, roots: Path = roots,
                         env: dict[str, str] = ENV, tag: str = "") -> tuple[list[str], dict[str, str]]:
                    return [WORKBENCH, "build", "--root", str(roots / f"r{n}{tag}"), "--addr", daemon.addr, *front,
                            "--progress", "plain", *daemon.ours_extra(key), str(ctx)], env

                def theirs(n: int, key: str = key, ctx: Path = ctx) -> tuple[list[str], dict[str, str]]:
                    return daemon.theirs(ctx, key), daemon.env

                builds: list[Build] = [theirs, ours]
                if base_env is not None:
                    builds.append(partial(ours, env=base_env, tag="-base"))
                (t_cold, t_warm), (o_cold, o_warm), *base = measure(daemon, builds, args.repeat)
                shutil.rmtree(roots, ignore_errors=True)
                rows = [("ours", o_cold, o_warm)] + [("baseline", c, w) for c, w in base]
                if args.verbose:
                    for who, cold, warm in [*rows, ("theirs", t_cold, t_warm)]:
                        print(f"  {key} {who} cold: {' '.join(f'{t:.2f}' for t in cold)}")
                        print(f"  {key} {who} warm: {' '.join(f'{t:.3f}' for t in warm)}")
                tc, tw = statistics.median(t_cold), statistics.median(t_warm)
                for who, cold, warm in rows:
                    oc, ow = statistics.median(cold), statistics.median(warm)
                    if who == "ours":
                        over |= oc / tc > TARGET or ow / tw > TARGET
                    label = f"{key} {title}" if who == "ours" else f"{key} (baseline {args.baseline})"
                    print(f"{label[:33]:<34}{oc:>10.2f}{tc:>8.2f}{oc / tc:>6.2f}x{ow:>11.3f}{tw:>8.3f}"
                          f"{ow / tw:>6.2f}x", flush=True)
            print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print(f"target: ours/theirs <= {TARGET}x cold and warm: {'NOT met' if over else 'met'}")


if __name__ == "__main__":
    main()
