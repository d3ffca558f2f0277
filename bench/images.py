#!/usr/bin/env python3
"""Big images (issue 19): export, import, push and pull of a generated tree, as CLI processes; prints figures.

The tree is realistic in mix: many small text files (source-like, compressible) plus some large binaries, half
random (incompressible), half low-entropy (compressible). It is split in two folders, COPYed as two layers onto
the busybox base of the local registry (bash tests/conformance/registry.sh). Cases, each `--repeat` times
(median printed):

  export-new      no-cache build, --output type=oci, the tree changed each run (a stamp file per layer)
  export-reused   the same build again with unchanged content (blobs may be reused)
  import          `workbench image import` of a rootfs tar of the tree (172 MB at --sizes 250, as the issue's
                  Debian rootfs)
  push            no-cache build of changed content with --output type=image,name=…,push=true
  push-stored     `workbench image push` of an image built (untimed) beforehand; no BuildKit counterpart
  pull            a fresh root building `FROM <pushed image>` + `RUN true` (download, verify, unpack)
  pull-stored     `workbench image pull` into a fresh root; no BuildKit counterpart

MB/s is the tree's (or the tar's) uncompressed size over the time. CPU s is the user+sys seconds of the client
(the CLI, buildctl) and of the daemon (the build server, buildkitd) during a run: on a shared machine it moves
far less than the time does. Peak RSS is the largest VmHWM of the CLI, the build server's children and their
descendants during a case (sampled every 20 ms, so a peak in the last moments may be missed; --no-server runs
every build in the CLI). BuildKit runs the same cases when BUILDCTL and
BUILDKIT_ADDR are set; its RSS is buildkitd's largest sampled VmRSS. `pigz` and `zstd -T0` on the import tar
give the physical reference.

Usage: .venv/bin/python bench/images.py [--sizes 250,1000] [--cases export,import,push,pull] [--repeat N]
                                        [--no-server] [--keep]
Run it on a quiet disk: see the note in main() on ext4 and deleted files. BENCH_TMP chooses the temp folder.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

WORKBENCH = str(Path(sys.executable).parent / "workbench")
REGISTRY = "localhost:5055"
BASE = f"{REGISTRY}/busybox"
ROOTFS_SHARE = 172 / 250  # the rootfs tar was 172 MB; at --sizes 250 the import tar is that size
CASE_GROUPS = {
    "export": ("export-new", "export-reused"),
    "import": ("import",),
    "push": ("push", "push-stored"),
    "pull": ("pull", "pull-stored"),
}
MB = 1_000_000

# bytecode caches as an installed CLI has them (some shells set PYTHONDONTWRITEBYTECODE)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# ---- the tree ---------------------------------------------------------------------------------------------

WORDS = ("def class return import from self None True False if else elif for while in not and or with as try "
         "except raise yield lambda value result index buffer layer digest content store snapshot config path "
         "name size count data items key reader writer stream chunk offset length error message").split()


def _text_pool(rng: random.Random, size: int) -> bytes:
    """Source-like text (indented lines of identifiers): compresses about 4× with gzip, like real code."""
    lines, total = [], 0
    while total < size:
        words = rng.choices(WORDS, k=rng.randint(2, 10))
        line = " " * (4 * rng.randint(0, 3)) + " ".join(words) + f"  # {rng.getrandbits(24):x}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _low_entropy(rng: random.Random, size: int) -> bytes:
    """Binary-like data that compresses about 2×: 16-symbol random bytes with runs of zeros between."""
    table = bytes(rng.choice(b"\x00\x01\x02\x03\x08\x10\x20\x40\x7f\x80\xc0\xe8\xff\x48\x89\x8b")
                  for _ in range(256))
    out, total = [], 0
    while total < size:
        block = os.urandom(rng.randint(4096, 65536)).translate(table) + bytes(rng.randint(0, 16384))
        out.append(block)
        total += len(block)
    return b"".join(out)[:size]


def make_tree(top: Path, size_mb: int, seed: int = 19) -> list[Path]:
    """Writes ~size_mb MB under top/a and top/b (40% small text files, 30% random and 30% compressible
    binaries); returns the files in the order written (so a prefix is a realistic subset for the rootfs)."""
    rng = random.Random(seed)
    budget = size_mb * MB
    pool = _text_pool(rng, 4 * MB)
    files: list[Path] = []
    plan: list[tuple[str, int]] = []  # (kind, size)
    text_left, bin_left = int(budget * 0.4), budget - int(budget * 0.4)
    while text_left > 0:
        n = min(text_left, int(rng.lognormvariate(8.5, 1.0)) + 200)  # median ~5 kB, a tail to ~100 kB
        plan.append(("text", n))
        text_left -= n
    big = max(1, min(24 * MB, bin_left // 8))
    random_turn = True
    while bin_left > 0:
        n = min(bin_left, rng.randint(big // 2, big))
        plan.append(("random" if random_turn else "binary", n))
        random_turn = not random_turn
        bin_left -= n
    rng.shuffle(plan)
    for i, (kind, n) in enumerate(plan):
        half = "a" if i % 2 == 0 else "b"
        folder = top / half / f"pkg{i // 200:03}" / f"mod{i // 20 % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "text":
            start = rng.randrange(0, len(pool) - n) if n < len(pool) else 0
            path = folder / f"file{i:06}.py"
            path.write_bytes(f"# {path.name}\n".encode() + pool[start:start + n])
        elif kind == "random":
            path = folder / f"blob{i:06}.bin"
            path.write_bytes(os.urandom(n))
        else:
            path = folder / f"lib{i:06}.so"
            path.write_bytes(_low_entropy(rng, n))
        files.append(path)
    return files


def stamp(tree: Path, nonce: str) -> None:
    """Changes both layers' content (so nothing can be reused) with one small file each."""
    for half in ("a", "b"):
        (tree / half / ".stamp").write_text(nonce + "\n")


def make_rootfs_tar(tree: Path, files: list[Path], dest: Path, size: int) -> int:
    """A tar of the first files of the tree summing to `size` bytes; returns its size."""
    chosen, total = [], 0
    for path in files:
        if total >= size:
            break
        chosen.append(str(path.relative_to(tree)))
        total += path.stat().st_size
    listing = dest.with_suffix(".list")
    listing.write_text("\n".join(chosen) + "\n")
    subprocess.run(["tar", "-cf", str(dest), "-C", str(tree), "-T", str(listing)], check=True)
    return dest.stat().st_size


def tree_bytes(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


# ---- measuring --------------------------------------------------------------------------------------------

def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def _cpu_seconds(pid: int, reaped: bool = True) -> float:
    """utime+stime of `pid` (all its threads), with its reaped children's (`reaped`), from /proc; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(v) for v in fields[11:15 if reaped else 13]) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Largest VmHWM among the CLI, the build server's children and their descendants, and largest VmRSS of
    `single` (buildkitd), sampled in a thread while a case runs.

    Not the rusage of wait4/RUSAGE_CHILDREN: Linux keeps a process's high-water mark across exec, so a CLI
    forked from this (70 MB) script would report at least 70 MB; VmHWM belongs to the exec'd image.

    Also the CPU seconds of the server's descendants (`server_cpu`): the server forks a child per build and
    reaps it later, so its own counters would miss the build; each process is counted on its own (a last
    sample up to 20 ms before it exits)."""

    def __init__(self, parent: Server | None, single: int | None) -> None:
        self.parent, self.single = parent, single
        self.process = 0  # the CLI, once started: it and its descendants count too
        self.peak_kb = self.single_kb = 0
        self.cpu_start: dict[int, float] = {}
        self.cpu_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.cpu_start = {pid: _cpu_seconds(pid, reaped=False) for pid in self._server_tree()}
        self._thread.start()
        return self

    def _server_tree(self) -> list[int]:
        if not self.parent:
            return []
        found, stack = [], _children(self.parent.pid())
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack += _children(pid)
        return found

    def server_cpu(self) -> float:
        return sum(max(0.0, seen - self.cpu_start.get(pid, 0.0)) for pid, seen in self.cpu_seen.items())

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            for pid in self._server_tree():
                self.peak_kb = max(self.peak_kb, _status_kb(pid, "VmHWM:"))
                self.cpu_seen[pid] = max(self.cpu_seen.get(pid, 0.0), _cpu_seconds(pid, reaped=False))
            stack = [self.process] if self.process else []
            while stack:
                pid = stack.pop()
                self.peak_kb = max(self.peak_kb, _status_kb(pid, "VmHWM:"))
                stack += _children(pid)
            if self.single:
                self.single_kb = max(self.single_kb, _status_kb(self.single, "VmRSS:"))
            if self._stop.wait(0.02):
                return


@dataclass
class Run:
    seconds: float
    rss_mb: float
    cpu: float = 0.0  # user+sys seconds of the client and of the daemon (its threads and reaped children)


@dataclass
class Case:
    name: str
    data_bytes: int = 0
    ours: list[Run] = field(default_factory=list)
    theirs: list[Run] = field(default_factory=list)
    command: str = ""


def timed(argv: list[str], server: Server | None = None, single: int | None = None) -> Run:
    """Runs argv (output discarded; its stderr shown if it fails), timing it and taking its peak memory and
    the CPU seconds it and the daemon (the build server, or `single`: buildkitd) spent meanwhile."""
    daemon = server.pid() if server else single
    reaped = server is None  # buildkitd's reaped children are its steps; the server's, builds counted already
    daemon_cpu = _cpu_seconds(daemon, reaped) if daemon else 0.0
    with tempfile.TemporaryFile() as err, Sampler(server, single) as sampler:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=ENV)
        sampler.process = proc.pid
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"failed ({proc.returncode}): {shlex.join(argv)}\n{err.read().decode(errors='replace')[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime + sampler.server_cpu()
    if daemon and (server is None or server.pid() == daemon):  # a restarted server's CPU is not comparable
        cpu += _cpu_seconds(daemon, reaped) - daemon_cpu
    peak_kb = sampler.peak_kb if single is None else sampler.single_kb
    return Run(seconds, peak_kb / 1024, cpu)


class Server:
    """The build server on our own socket, started first (like buildkitd for buildctl). A server whose code
    stamp went stale (the package was edited) leaves and a new one starts: its pid is looked up again."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        subprocess.run([WORKBENCH, "build", "--root", "/nonexistent/root", "/nonexistent/ctx"], env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while subprocess.run([WORKBENCH, "server", "status"], env=ENV, stdout=subprocess.DEVNULL).returncode:
            if time.monotonic() > deadline:
                sys.exit("the build server did not start")
            time.sleep(0.1)
        self._pid = self._find()

    def pid(self) -> int:
        if not self._pid or not os.path.exists(f"/proc/{self._pid}"):
            self._pid = self._find()
        return self._pid

    def _find(self) -> int:
        """The listener: a process running workbench.server on our socket whose parent does not."""
        ours: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if b"workbench.server" in cmdline and self.socket.encode() in cmdline:
                    ours[int(entry)] = ppid
        return next((pid for pid, ppid in ours.items() if ppid not in ours), 0)

    def stop(self) -> None:
        subprocess.run([WORKBENCH, "server", "stop"], env=ENV, stdout=subprocess.DEVNULL)


@dataclass
class BuildKit:
    buildctl: str
    addr: str
    pid: int | None

    def build(self, tree: Path, dockerfile: Path, output: str | None) -> list[str]:
        argv = [self.buildctl, "--addr", self.addr, "build", "--frontend", "dockerfile.v0",
                "--local", f"context={tree}", "--local", f"dockerfile={dockerfile}", "--no-cache"]
        return argv + (["--output", output] if output else [])


def buildkit_from_env() -> BuildKit | None:
    buildctl, addr = os.environ.get("BUILDCTL"), os.environ.get("BUILDKIT_ADDR")
    if not buildctl or not addr:
        return None
    pid = None
    if addr.startswith("unix://"):  # buildkitd's pid, for its memory: the process holding the socket's path
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"buildkitd" in cmdline.split(b"\0")[0] and addr.encode() in cmdline:
                    pid = int(entry)
    return BuildKit(buildctl, addr, pid)


def reference(tar: Path) -> list[str]:
    """MB/s of pigz and zstd -T0 compressing the tar (read once before, so it comes from the page cache)."""
    lines = []
    size = tar.stat().st_size
    with open(tar, "rb") as f:
        while f.read(1 << 20):
            pass
    for tool, argv in (("pigz", ["pigz", "-6", "-c"]), ("zstd -T0", ["zstd", "-T0", "-3", "-c", "-q"])):
        if shutil.which(argv[0]) is None:
            lines.append(f"  {tool}: not installed (skipped)")
            continue
        with open(tar, "rb") as src, tempfile.TemporaryFile() as out:
            t = time.perf_counter()
            subprocess.run(argv, stdin=src, stdout=out, check=True)
            seconds = time.perf_counter() - t
            compressed = out.tell()
        lines.append(f"  {tool:<9}{seconds:>7.2f} s {size / MB / seconds:>8.1f} MB/s  "
                     f"{size / MB:.0f} MB -> {compressed / MB:.0f} MB  ({shlex.join(argv)} < tar)")
    return lines


# ---- the cases --------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, top: Path, size_mb: int, repeat: int, server: Server | None, bk: BuildKit | None) -> None:
        self.top, self.size_mb, self.repeat, self.server, self.bk = top, size_mb, repeat, server, bk
        self.tree = top / "tree"
        self.runs = 0
        self.pushed: list[str] = []  # images pushed by workbench, for the pull cases
        self.export_df = self._dockerfile("export", f"FROM {BASE}\nCOPY a /a\nCOPY b /b\n")
        self.tree_size = 0
        self.files: list[Path] = []

    def _dockerfile(self, name: str, text: str) -> Path:
        folder = self.top / "df" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(text)
        return folder

    def nonce(self) -> str:
        self.runs += 1
        return f"{self.size_mb}-{self.runs}-{os.urandom(8).hex()}"

    def wb_build(self, root: Path, df: Path, *extra: str, context: Path | None = None) -> list[str]:
        return [WORKBENCH, "build", "--root", str(root), "--progress", "plain", "--no-cache",
                "-f", str(df / "Dockerfile"), *extra, str(context or self.tree)]

    def prepare(self) -> None:
        t = time.perf_counter()
        self.files = make_tree(self.tree, self.size_mb)
        self.tree_size = tree_bytes(self.tree)
        os.sync()
        print(f"tree: {len(self.files)} files, {self.tree_size / MB:.0f} MB in {time.perf_counter() - t:.1f} s",
              flush=True)

    def export(self) -> list[Case]:
        new, reused = Case("export-new", self.tree_size), Case("export-reused", self.tree_size)
        root, dest = self.top / "root-export", self.top / "out" / "wb.tar"
        dest.parent.mkdir(exist_ok=True)
        wb = self.wb_build(root, self.export_df, "--output", f"type=oci,dest={dest}")
        bk = self.bk.build(self.tree, self.export_df, f"type=oci,dest={self.top / 'out' / 'bk.tar'}") \
            if self.bk else None
        new.command = reused.command = shlex.join(wb)
        for _ in range(self.repeat):
            stamp(self.tree, self.nonce())
            os.sync()
            new.ours.append(timed(wb, self.server))
            if bk:
                os.sync()
                new.theirs.append(timed(bk, single=self.bk.pid if self.bk else None))
        for _ in range(self.repeat):
            os.sync()
            reused.ours.append(timed(wb, self.server))
            if bk:
                os.sync()
                reused.theirs.append(timed(bk, single=self.bk.pid if self.bk else None))
        return [new, reused]

    def import_(self) -> list[Case]:
        tar = self.top / "rootfs.tar"
        size = make_rootfs_tar(self.tree, self.files, tar, int(self.size_mb * ROOTFS_SHARE * MB))
        case = Case("import", size)
        for n in range(self.repeat):
            argv = [WORKBENCH, "image", "import", "--root", str(self.top / f"root-import{n}"), str(tar),
                    f"bench/rootfs:{n}"]
            case.command = shlex.join(argv)
            os.sync()
            case.ours.append(timed(argv))
        print("physical reference (the import tar):")
        print("\n".join(reference(tar)), flush=True)
        return [case]

    def push(self) -> list[Case]:
        built, stored = Case("push", self.tree_size), Case("push-stored", self.tree_size)
        root = self.top / "root-push"
        for _ in range(self.repeat):
            nonce = self.nonce()
            stamp(self.tree, nonce)
            name = f"{REGISTRY}/bench/wb:{nonce}"
            argv = self.wb_build(root, self.export_df, "--output", f"type=image,name={name},push=true")
            built.command = shlex.join(argv)
            os.sync()
            built.ours.append(timed(argv, self.server))
            self.pushed.append(name)
            if self.bk:
                stamp(self.tree, self.nonce())
                os.sync()
                out = f"type=image,name={REGISTRY}/bench/bk:{nonce},push=true,registry.insecure=true"
                built.theirs.append(timed(self.bk.build(self.tree, self.export_df, out), single=self.bk.pid))
            # the stored image, built untimed, then pushed alone
            stamp(self.tree, self.nonce())
            name = f"{REGISTRY}/bench/stored:{nonce}"
            subprocess.run(self.wb_build(root, self.export_df, "-t", name), env=ENV, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            argv = [WORKBENCH, "image", "push", "--root", str(root), name]
            stored.command = shlex.join(argv)
            os.sync()
            stored.ours.append(timed(argv))
        return [built, stored]

    def pull(self) -> list[Case]:
        if not self.pushed:  # pull needs images no engine has seen: push them (untimed) when push was not run
            root = self.top / "root-push"
            for _ in range(self.repeat):
                nonce = self.nonce()
                stamp(self.tree, nonce)
                name = f"{REGISTRY}/bench/wb:{nonce}"
                subprocess.run(self.wb_build(root, self.export_df, "--output", f"type=image,name={name},push=true"),
                               env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.pushed.append(name)
        built, stored = Case("pull", self.tree_size), Case("pull-stored", self.tree_size)
        for n, name in enumerate(self.pushed[:self.repeat]):
            df = self._dockerfile(f"pull{n}", f"FROM {name}\nRUN true\n")
            argv = self.wb_build(self.top / f"root-pull{n}", df, context=df)  # no COPY: a context of nothing
            built.command = shlex.join(argv)
            os.sync()
            built.ours.append(timed(argv, self.server))
            if self.bk:
                os.sync()
                built.theirs.append(timed(self.bk.build(df, df, None), single=self.bk.pid))
            argv = [WORKBENCH, "image", "pull", "--root", str(self.top / f"root-pull-stored{n}"), name]
            stored.command = shlex.join(argv)
            os.sync()
            stored.ours.append(timed(argv))
        return [built, stored]


def _median(runs: list[Run]) -> tuple[float, float, float]:
    """Median seconds, largest RSS, median CPU seconds."""
    seconds, cpu = statistics.median(r.seconds for r in runs), statistics.median(r.cpu for r in runs)
    return seconds, max(r.rss_mb for r in runs), cpu


def print_table(size_mb: int, cases: list[Case], verbose: bool) -> None:
    print("\nload average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'case (' + str(size_mb) + ' MB tree)':<22}{'MB':>6}{'s':>8}{'MB/s':>8}{'RSS MB':>8}{'CPU s':>7}"
          f"{'BK s':>8}{'BK RSS':>8}{'BK CPU':>8}{'/BK':>7}{'CPU/BK':>8}")
    for case in cases:
        s, rss, cpu = _median(case.ours)
        mb = case.data_bytes / MB
        line = f"{case.name:<22}{mb:>6.0f}{s:>8.2f}{mb / s:>8.1f}{rss:>8.0f}{cpu:>7.1f}"
        if case.theirs:
            bs, brss, bcpu = _median(case.theirs)
            line += f"{bs:>8.2f}{brss:>8.0f}{bcpu:>8.1f}{s / bs:>6.2f}x{cpu / bcpu if bcpu else 0:>7.2f}x"
        else:
            line += f"{'-':>8}{'-':>8}{'-':>8}{'-':>7}{'-':>8}"
        print(line, flush=True)
        if verbose:
            print(f"  runs (s/CPU s): {' '.join(f'{r.seconds:.2f}/{r.cpu:.1f}' for r in case.ours)}"
                  + (f"; BuildKit: {' '.join(f'{r.seconds:.2f}/{r.cpu:.1f}' for r in case.theirs)}"
                     if case.theirs else ""))
    print("commands (last run of each case):")
    for case in cases:
        print(f"  {case.name}: {case.command}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="250", help="tree sizes in MB, comma-separated (e.g. 250,1000)")
    ap.add_argument("--cases", default=",".join(CASE_GROUPS), help="of: " + ", ".join(CASE_GROUPS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-server", action="store_true", help="every build runs in the CLI (exact peak RSS)")
    ap.add_argument("--verbose", action="store_true", help="print every run's time as well")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the temp folder and the server go too
    groups = [g for g in args.cases.split(",") if g]
    unknown = [g for g in groups if g not in CASE_GROUPS]
    if unknown:
        ap.error(f"unknown cases {unknown}: choose from {', '.join(CASE_GROUPS)}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}", flush=True)
    bk = buildkit_from_env()
    print("BuildKit: " + (f"{bk.buildctl} at {bk.addr}" if bk else "not given (set BUILDCTL and BUILDKIT_ADDR)"),
          flush=True)
    # Everything is removed only at the end: on ext4 without a journal (this VM's disk), creating files within
    # a minute or so of deleting many scans every recently freed inode per new file (recently_deleted() in
    # ext4's inode allocator): a deletion between runs would be timed, not the build (as in bench/run.py).
    with tempfile.TemporaryDirectory(prefix="bench-images-", dir=os.environ.get("BENCH_TMP")) as top:
        server = None
        if args.no_server:
            ENV["WORKBENCH_SERVER"] = "0"
        else:  # a server of our own: other builds on this machine neither share it nor restart it
            ENV["WORKBENCH_SERVER_SOCKET"] = f"{top}/server/server.sock"
            server = Server(ENV["WORKBENCH_SERVER_SOCKET"])
        try:
            for size in (int(s) for s in args.sizes.split(",")):
                bench = Bench(Path(top) / f"s{size}", size, args.repeat, server, bk)
                bench.prepare()
                steps: dict[str, Callable[[], list[Case]]] = {
                    "export": bench.export, "import": bench.import_, "push": bench.push, "pull": bench.pull}
                cases: list[Case] = []
                for group in groups:
                    cases += steps[group]()
                print_table(size, cases, args.verbose)
        finally:
            if server:
                server.stop()


if __name__ == "__main__":
    main()
