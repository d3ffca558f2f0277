"""Run one build step in a real container with the system `runc`, streaming its output."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from workbench.executor.spec import ExecSpec, generate_spec
from workbench.executor.user import UserError, resolve_user
from workbench.snapshot.rootpath import resolve_in_root

HOSTS = "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# Paths runc may have to create as mount points; those it creates must not end up in the layer.
_MOUNT_POINTS = ["/etc/hosts", "/etc/resolv.conf", "/etc", "/dev", "/proc", "/sys"]


class ExecError(Exception):
    """The step could not be started (no runc, unknown user, ...)."""


@dataclass
class ExecResult:
    exit_code: int
    signal: int | None = None


def _resolv_conf(network: str) -> str:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        lines = []
    if network == "none":
        lines = [ln for ln in lines if not ln.strip().startswith("nameserver")]
    return "\n".join(lines) + "\n"


def _pump(stream: IO[bytes], fd: int, on_output: Callable[[int, bytes], None] | None) -> None:
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        if on_output is not None:
            on_output(fd, chunk)


def run(
    rootfs: Path,
    spec: ExecSpec,
    state_dir: Path,
    on_output: Callable[[int, bytes], None] | None = None,
    stdin: bytes | None = None,
    cancel: threading.Event | None = None,
) -> ExecResult:
    """Run `spec` on the mounted `rootfs`; returns the exit code (128+signal when killed)."""
    runc = shutil.which("runc")
    if runc is None:
        raise ExecError("runc is not installed (apt-get install runc)")
    try:
        uid, gid, groups = resolve_user(rootfs, spec.user)
    except UserError as e:
        raise ExecError(str(e)) from None
    missing = [p for p in _MOUNT_POINTS if not os.path.lexists(resolve_in_root(rootfs, p, follow_final=False))]
    cwd = resolve_in_root(rootfs, spec.cwd or "/")
    if not cwd.exists():
        cwd.mkdir(parents=True, mode=0o755)
        os.chown(cwd, uid, gid)
    cid = "wb-" + secrets.token_hex(8)
    bundle = Path(os.path.realpath(state_dir)) / cid
    bundle.mkdir(parents=True)
    runc_root = state_dir / "runc"
    try:
        (bundle / "hosts").write_text(HOSTS)
        (bundle / "resolv.conf").write_text(_resolv_conf(spec.network))
        real_root = Path(os.path.realpath(rootfs))  # runc wants an absolute path with no symlinks
        config = generate_spec(spec, real_root, bundle / "resolv.conf", bundle / "hosts", uid, gid, groups)
        (bundle / "config.json").write_text(json.dumps(config))
        proc = subprocess.Popen(
            [runc, "--root", str(runc_root), "run", "--bundle", str(bundle), cid],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [threading.Thread(target=_pump, args=(s, fd, on_output), daemon=True)
                 for s, fd in ((proc.stdout, 1), (proc.stderr, 2))]
        for t in pumps:
            t.start()
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        killed = False
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set() and not killed:
                    subprocess.run([runc, "--root", str(runc_root), "kill", cid, "KILL"], capture_output=True)
                    killed = True
        for t in pumps:
            t.join()
        return ExecResult(code, 9 if killed else (code - 128 if code > 128 else None))
    finally:
        subprocess.run([runc, "--root", str(runc_root), "delete", "-f", cid], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)
        for p in missing:  # deepest first: /etc/hosts before /etc
            host = resolve_in_root(rootfs, p, follow_final=False)
            try:
                if host.is_dir() and not host.is_symlink():
                    host.rmdir()
                elif os.path.lexists(host):
                    host.unlink()
            except OSError:
                pass  # /etc got real content during the step: it stays
