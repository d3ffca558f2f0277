"""Run one build step in a real container with the system `runc`, streaming its output."""

from __future__ import annotations

import ctypes
import fcntl
import functools
import ipaddress
import json
import os
import posixpath
import secrets
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from workbench.executor.spec import DEFAULT_HOSTNAME, ExecSpec, generate_spec, with_default_path
from workbench.executor.user import UserError, resolve_user
from workbench.fsutil.paths import resolve_in_root
from workbench.reaper import ensure_reaper
from workbench.rootless.userns import unmapped_ids
from workbench.state_root import write_private

OutputFn = Callable[[int, bytes], None]
# Mount points runc may have to create in the rootfs; those it creates must not end up in the layer.
_BASE_MOUNT_POINTS = ["/etc/hosts", "/etc/resolv.conf", "/dev", "/proc", "/sys"]
_KILL_GIVE_UP_S = 5.0


class ExecError(Exception):
    """The step could not be started (no runc, unknown user, ...)."""


@dataclass
class ExecResult:
    """How the step's process ended: exit code, 128+N when killed by signal N (as runc reports)."""

    exit_code: int
    signal: int | None = None


def hosts_file(hostname: str = DEFAULT_HOSTNAME) -> str:
    """BuildKit's /etc/hosts for a step."""
    names = "localhost" if hostname == "localhost" else f"localhost {hostname}"
    return f"127.0.0.1\t{names}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(network: str, host_file: Path = Path("/etc/resolv.conf")) -> str:
    """The host's resolv.conf; in a network namespace of its own, loopback nameservers are dropped."""
    try:
        lines = host_file.read_text().splitlines()
    except OSError:
        lines = []
    if network == "none":
        lines = [ln for ln in lines
                 if not (len(f := ln.split()) >= 2 and f[0] == "nameserver" and _is_loopback(f[1]))]
    return "\n".join(lines) + "\n" if lines else ""


class _Stubs:
    """Mount points runc creates in the rootfs, removed again after the run (as BuildKit's MountStubsCleaner).

    A parent directory whose entries are the same after the stubs are gone as before the run gets its
    timestamps back, for reproducible layers (secret, ssh and cache mounts under /run, /etc, ... included).
    """

    def __init__(self, rootfs: Path, dests: list[str]) -> None:
        self.paths: list[Path] = []
        self.parent_times: dict[Path, tuple[int, int]] = {}
        self.parent_entries: dict[Path, set[str]] = {}
        for dest in dests:
            try:
                p = resolve_in_root(rootfs, dest)  # runc follows symlinks inside the rootfs too
            except OSError:
                continue
            while p != rootfs and not os.path.lexists(p):
                if p not in self.paths:
                    self.paths.append(p)
                parent = p.parent
                if os.path.lexists(parent) and parent not in self.parent_times:
                    st = os.stat(parent)
                    self.parent_times[parent] = (st.st_atime_ns, st.st_mtime_ns)
                    self.parent_entries[parent] = _entries(parent)
                p = parent
        self.paths.sort(key=lambda q: len(q.parts), reverse=True)  # children before their parents

    def remove(self) -> None:
        for p in self.paths:
            try:
                st = os.lstat(p)
                if stat.S_ISDIR(st.st_mode):
                    p.rmdir()  # fails when the step put something there: then it stays
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    p.unlink()
            except OSError:
                pass
        # A parent holding the same entries as before the run had no change but the stubs: restore its times.
        # (Comparing mtimes with the stubs' ctimes is not enough: on overlayfs the parent's mtime can be a
        # little later than the stub's ctime.)
        for parent, (atime, mtime) in self.parent_times.items():
            if _mtime(parent) == mtime or _entries(parent) != self.parent_entries[parent]:
                continue
            try:
                os.utime(parent, ns=(atime, mtime))
            except OSError:
                pass


def _entries(p: Path) -> set[str]:
    try:
        return set(os.listdir(p))
    except OSError:
        return {"\0unreadable"}


def _mtime(p: Path) -> int:
    try:
        return os.stat(p).st_mtime_ns
    except OSError:
        return 1 << 62


def _make_cwd(rootfs: Path, cwd: str, uid: int, gid: int) -> None:
    """Create the working directory (and missing parents) owned by the user, as BuildKit does."""
    target = resolve_in_root(rootfs, cwd)
    missing: list[Path] = []
    p = target
    while p != rootfs and not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        os.chmod(d, 0o755)
        os.chown(d, uid, gid)
    if not target.is_dir():
        raise ExecError(f"cannot use {cwd} as working directory: not a directory")


_F_SETPIPE_SZ = 1031
_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (a detached container's process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise ExecError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def _pump(stream: IO[bytes], fd: int, on_output: OutputFn | None, errors: list[BaseException]) -> None:
    """Forward a process's output in batches: a program writing line by line (busybox echo: one write per
    line) would otherwise cost one event per line. After a small read we wait 10 ms for more to gather in
    an enlarged pipe, so output keeps flowing at full speed while events stay few."""
    raw = stream.fileno()
    try:
        fcntl.fcntl(raw, _F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for this user: the default size works too
    while chunk := os.read(raw, 1 << 16):
        if on_output is not None and not errors:
            try:
                on_output(fd, chunk)
            except BaseException as e:  # keep draining so runc never blocks on a full pipe
                errors.append(e)
        if len(chunk) < 1 << 15:
            time.sleep(0.01)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, ValueError, OSError):
        pass  # the process exited or closed stdin without reading it all
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def run(
    rootfs: Path,
    spec: ExecSpec,
    state_dir: Path,
    on_output: OutputFn | None = None,
    stdin: bytes | None = None,
    cancel: threading.Event | None = None,
) -> ExecResult:
    """Run `spec` in a container on the mounted `rootfs`, streaming (1|2, chunk) to `on_output`.

    Returns the exit code (128+signal when killed; 137 after `cancel`). Raises ExecError when the step
    cannot be set up. The bundle, runc's state and mount-point stubs are removed afterwards.
    """
    with _container(rootfs, spec, state_dir) as (base, bundle, cid):
        # --detach: the container inherits our pipes (foreground `runc run` would copy every write through
        # itself); as its subreaper we then wait for the container's process ourselves.
        _become_subreaper()
        pid_file = bundle / "pid"
        proc = subprocess.Popen(
            [*base, "run", "--detach", "--pid-file", str(pid_file), "--bundle", str(bundle), cid],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_pump, args=(s, fd, on_output, errors), daemon=True)
                   for s, fd in ((proc.stdout, 1), (proc.stderr, 2))]
        if stdin is not None and proc.stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        done = threading.Event()
        pid: list[int] = []
        if cancel is not None:
            threading.Thread(target=_watch_cancel, args=(proc, base, cid, cancel, done, pid), daemon=True).start()
        for t in threads:
            t.start()
        try:
            code = proc.wait()  # runc returns once the container started (or failed to)
            if code == 0:
                pid.append(int(pid_file.read_text().strip()))
                code = os.waitstatus_to_exitcode(os.waitpid(pid[0], 0)[1])
        finally:
            done.set()
        for t in threads:
            t.join()
        if code < 0:  # killed by a signal (SIGKILL after a cancel)
            code = 128 - code
        if errors:
            raise errors[0]
        return ExecResult(code, code - 128 if 128 < code <= 128 + 64 else None)



@contextmanager
def _container(rootfs: Path, spec: ExecSpec, state_dir: Path,
               edit: Callable[[dict[str, Any]], None] | None = None) -> Iterator[tuple[list[str], Path, str]]:
    """A runc bundle for `spec` on `rootfs`: yields (runc command prefix, bundle dir, container id).

    Afterwards the container (if runc still knows it), the bundle and the mount-point stubs are removed.
    """
    runc = shutil.which("runc")
    if runc is None:
        raise ExecError("runc is not installed (apt-get install runc)")
    rootfs = Path(os.path.realpath(rootfs))  # runc wants an absolute root path without symlinks
    if not rootfs.is_dir():
        raise ExecError(f"rootfs {rootfs} is not a directory")
    try:
        uid, gid, groups = resolve_user(rootfs, spec.user)
    except UserError as e:
        raise ExecError(str(e)) from None
    if why := unmapped_ids(uid, gid, groups):
        raise ExecError(why)
    state = Path(os.path.realpath(state_dir))
    ensure_reaper(state.parent)  # a killed build's containers die with it (workbench.reaper)
    runc_root = state / "runc"
    cid = "wb-" + secrets.token_hex(8)
    bundle = state / f"bundle-{cid}"
    bundle.mkdir(mode=0o700, parents=True)
    os.chmod(bundle, 0o700)  # config.json holds the step's environment, secrets passed as env included
    stubs: _Stubs | None = None
    base = [runc, "--root", str(runc_root)]
    try:
        (bundle / "hosts").write_text(hosts_file(spec.hostname))
        (bundle / "resolv.conf").write_text(resolv_conf(spec.network))
        try:
            config = generate_spec(spec, rootfs, bundle / "resolv.conf", bundle / "hosts", uid, gid, groups)
        except ValueError as e:
            raise ExecError(str(e)) from None
        if edit is not None:
            edit(config)
        write_private(bundle / "config.json", json.dumps(config))
        stubs = _Stubs(rootfs, _BASE_MOUNT_POINTS + [posixpath.normpath("/" + m.destination) for m in spec.mounts])
        _make_cwd(rootfs, config["process"]["cwd"], uid, gid)
        yield base, bundle, cid
    finally:
        if (runc_root / cid).exists():
            subprocess.run([*base, "delete", "-f", cid], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)
        if stubs is not None:
            stubs.remove()


def run_interactive(rootfs: Path, spec: ExecSpec, state_dir: Path,
                    on_start: Callable[[Callable[[], None]], None] | None = None, terminal: int | None = None) -> int:
    """Run `spec` in a container attached to this process's own stdin/stdout/stderr and return its exit code.

    When stdin is a terminal the process gets a real pty (runc in the foreground proxies it, puts the
    terminal in raw mode and passes window-size changes on), the user's `TERM` and the terminal's size from
    its first instant. `on_start` receives a function that kills the container, for a caller that must be
    able to end it from another thread (abort, quit). Raises ExecError, before anything starts, when the
    program is not in the container's filesystem. `terminal`: a terminal to use instead of this process's
    own stdin/stdout/stderr (a pty the DAP server relays to an editor's terminal).
    """
    fd = 0 if terminal is None else terminal
    tty = os.isatty(fd)
    if (missing := missing_program(rootfs, spec)) is not None:
        raise ExecError(missing)

    def use_terminal(config: dict[str, Any]) -> None:
        config["process"]["terminal"] = tty
        if tty:
            _share_terminal(config["process"], (0, 1, 2) if terminal is None else (terminal,))

    stdio: dict[str, Any] = {} if terminal is None else {"stdin": fd, "stdout": fd, "stderr": fd,
                                                         "start_new_session": True}
    with _container(rootfs, spec, state_dir, use_terminal) as (base, bundle, cid):
        proc = subprocess.Popen([*base, "run", "--bundle", str(bundle), cid], **stdio)

        def kill() -> None:
            subprocess.run([*base, "kill", cid, "KILL"], capture_output=True)
            if proc.poll() is None:
                proc.kill()

        if on_start is not None:
            on_start(kill)
        code = proc.wait()
        return 128 - code if code < 0 else code


def _share_terminal(process: dict[str, Any], fds: tuple[int, ...] = (0, 1, 2)) -> None:
    """The user's terminal as the container's process sees it: its `TERM` (which describes the terminal the
    process draws on, so it wins over one the image sets; `xterm` when the user has none, as `docker run -t`)
    and its size, set before the process starts (runc's own resize comes a moment after it started)."""
    term = os.environ.get("TERM") or "xterm"
    process["env"] = [e for e in process.get("env", []) if not e.startswith("TERM=")] + [f"TERM={term}"]
    for fd in fds:
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.lines and size.columns:
            process["consoleSize"] = {"height": size.lines, "width": size.columns}
        return


def missing_program(rootfs: Path, spec: ExecSpec) -> str | None:
    """Why `spec`'s program cannot start in `rootfs` (it is not there, or not executable), or None.

    Looked up as runc does (Go's exec.LookPath in the container): a name with a slash as it is, from the
    working directory; a bare name in the process's $PATH. A path under one of the spec's mounts is taken
    on trust (the mount is not there yet)."""
    if not spec.args:
        return "no command to run"
    program = spec.args[0]
    path = next((e[5:] for e in reversed(with_default_path(spec.env)) if e.startswith("PATH=")), "")
    if "/" in program:
        candidates = [posixpath.join(spec.cwd or "/", program)]
    else:
        candidates = [posixpath.join(d, program) for d in path.split(":") if d.startswith("/")]
    mounted = [posixpath.normpath("/" + m.destination) for m in spec.mounts]
    for candidate in candidates:
        candidate = posixpath.normpath(candidate)
        if any(candidate == m or candidate.startswith(m.rstrip("/") + "/") for m in mounted):
            return None
        try:
            host = resolve_in_root(Path(os.path.realpath(rootfs)), candidate)
        except OSError:
            continue
        if host.is_file() and os.stat(host).st_mode & 0o111:
            return None
    looked = "" if "/" in program else f" (looked in $PATH={path})"
    return (f"this step's filesystem has no {program}{looked}; exec a command from it, "
            "or break on a later step")


def _watch_cancel(proc: subprocess.Popen[bytes], base: list[str], cid: str, cancel: threading.Event,
                  done: threading.Event, pid: list[int]) -> None:
    """On `cancel`, SIGKILL the container (retrying until runc has created it); then its process directly."""
    while not done.wait(0.1):
        if cancel.is_set():
            break
    else:
        return
    deadline = time.monotonic() + _KILL_GIVE_UP_S
    while not done.is_set():
        if subprocess.run([*base, "kill", cid, "KILL"], capture_output=True).returncode == 0:
            return
        if time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            for p in pid:
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            return
        done.wait(0.02)
