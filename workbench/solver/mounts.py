"""RUN --mount in the solver: cache keys of mounted inputs and the mounts a step's container gets.

bind    an input's `source` (a read-only view of a snapshot chain, the context filtered by .dockerignore, or
        an empty dir for input -1); writable binds get a throwaway overlay, so writes never reach anything.
cache   a persistent dir under ROOT/cachemounts (workbench.cache.mounts), shared/private/locked.
tmpfs   a tmpfs of `size` bytes.
secret  the session's value in a file on a private tmpfs, bind-mounted read-only; and/or an env var.
ssh     a socket forwarding to the client's ssh-agent (workbench.executor.ssh).

Only bind mounts of the context change the cache key (by the content of what they mount); secret values
never reach a key, an event or a layer.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.executor import spec as exec_spec
from workbench.fsutil.paths import resolve_in_root
from workbench.llb.ops import Copy, ExecOp, LocalSource, Mount
from workbench.solver.types import SolveError

if TYPE_CHECKING:
    from workbench.llb.ops import Vertex
    from workbench.solver.fileops import Excluded
    from workbench.solver.job import SolveJob
    from workbench.solver.session import Session
    from workbench.solver.types import Result
    from workbench.worker import Worker

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
INSECURE = "security.insecure"


def check_exec(session: Session, v: Vertex) -> None:
    """Refuse what the session does not allow (security=insecure) and malformed mounts."""
    op = v.op
    assert isinstance(op, ExecOp)
    if op.security not in exec_spec.SECURITY_MODES:
        raise SolveError(f"invalid security mode {op.security!r} (sandbox or insecure)", v)
    if op.security == "insecure" and not session.allows(INSECURE):
        raise SolveError(f"{INSECURE} is not allowed", v)
    for m in op.mounts:
        if m.type not in MOUNT_TYPES:
            raise SolveError(f"unsupported mount type {m.type!r} at {m.target or '?'}", v)
        if m.input >= len(v.inputs) or m.input < -1:
            raise SolveError(f"mount {m.target}: input {m.input} out of range", v)
        if not m.target and not (m.type == "secret" and m.env):
            raise SolveError(f"{m.type} mount: a target is required", v)
        if m.type == "cache" and m.sharing not in ("shared", "private", "locked"):
            raise SolveError(f"invalid cache sharing option: {m.sharing!r}", v)


def _bind_copy(action_src: str, idx: int) -> Copy:
    return Copy(src_input=idx, src=action_src, dest="/", allow_wildcard=False, follow_symlinks=True)


def mount_key_parts(job: SolveJob, v: Vertex) -> list[str]:
    """Extra cache-key parts for `v`'s mounts (the content of context paths a bind mount reads)."""
    from workbench.solver.checksum import copy_checksum
    from workbench.solver.fileops import FileActionError

    check_exec(job.session, v)
    assert isinstance(v.op, ExecOp)
    parts: list[str] = []
    for n, m in enumerate(v.op.mounts):
        if m.type != "bind" or m.input < 0 or not isinstance(v.inputs[m.input].op, LocalSource):
            continue  # other inputs are keyed by their own keys; cache/tmpfs/secret/ssh never key a step
        ctx = job.context(v.inputs[m.input])
        try:
            checksum, _ = copy_checksum(ctx.path, _bind_copy(m.source, m.input), ctx.excluded)
        except (FileActionError, OSError) as e:
            raise SolveError(f"failed to compute cache key: {e}", v) from None
        parts.append(f"mount{n}:{checksum}")
    return parts


# -- the mounts of one run ---------------------------------------------------------------------------


@dataclass
class StepMounts:
    """What a step's container gets from its mounts: OCI mounts and extra env entries."""

    mounts: list[exec_spec.Mount] = field(default_factory=list)
    env: list[str] = field(default_factory=list)


def _filtered_tree(context: Path, source: str, excluded: Excluded, dest: Path) -> None:
    """Hard-link (or copy) the non-excluded files of `source` in `context` to the same place under `dest`."""
    src_host = resolve_in_root(context, source)
    rel_root = os.path.relpath(src_host, context)
    target = dest if rel_root == "." else dest / rel_root

    def link(src: str, dst: Path) -> None:
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
            return
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def mkdirs(rel: str) -> None:
        path = dest / rel if rel != "." else dest
        if not path.exists():
            path.mkdir(parents=True)
            shutil.copystat(context / rel, path)

    if not src_host.is_dir() or src_host.is_symlink():
        target.parent.mkdir(parents=True, exist_ok=True)
        link(str(src_host), target)
        return
    mkdirs(rel_root)
    for dirpath, dirnames, filenames in os.walk(src_host):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, context)
        for name in sorted(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                if not excluded(rel):
                    mkdirs(rel_dir)
                    link(full, dest / rel)
            elif not excluded(rel):
                mkdirs(rel)
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if excluded(rel):
                continue
            mkdirs(rel_dir)
            link(os.path.join(dirpath, name), dest / rel)


class _Mounter:
    """Sets up the mounts of one exec vertex; everything is undone when `stack` closes."""

    def __init__(self, worker: Worker, job: SolveJob, v: Vertex, inputs: list[Result], stack: ExitStack) -> None:
        self.worker = worker
        self.job = job
        self.v = v
        self.inputs = inputs
        self.stack = stack
        self.views: dict[int, Path] = {}
        self._secret_dir: Path | None = None

    def tmpdir(self, prefix: str) -> Path:
        self.worker.snapshots.guard()  # what is made here may be mounted: a dying build must not leave it
        path = self.worker.snapshots.tmp / f"{prefix}-{secrets.token_hex(6)}"
        path.mkdir(mode=0o700)
        self.stack.callback(shutil.rmtree, path, True)
        return path

    def view(self, idx: int, source: str) -> Path:
        """A read-only-to-us host dir whose `source` is what input `idx` holds there."""
        if idx < 0:
            return self.tmpdir("scratch")
        src_v = self.v.inputs[idx]
        if isinstance(src_v.op, LocalSource):
            ctx = self.job.context(src_v)
            if ctx.excluded is None:
                return ctx.path
            view = self.tmpdir("ctx")
            try:
                _filtered_tree(ctx.path, source, ctx.excluded, view)
            except OSError as e:
                raise SolveError(f"failed to mount {source} from context: {e}", self.v) from None
            return view
        if idx not in self.views:
            chain = self.inputs[idx].chain
            if chain:
                self.views[idx] = self.stack.enter_context(self.worker.snapshots.mount_readonly(chain))
            else:
                self.views[idx] = self.tmpdir("scratch")
        return self.views[idx]

    def writable(self, lower: Path) -> Path:
        """A throwaway writable overlay on `lower` (a copy when overlayfs cannot take the path)."""
        from workbench.snapshot.overlay import OverlayError, mount_overlay, unmount

        work = self.tmpdir("rw")
        for d in ("upper", "work", "merged"):
            (work / d).mkdir()
        try:
            if self.worker.snapshots.copying:  # no overlay mounts at all with the copying snapshotter
                raise OverlayError("copying snapshotter")
            mount_overlay([lower], work / "upper", work / "work", work / "merged")
        except OverlayError:
            copy = work / "copy"
            subprocess.run(["cp", "-a", "--", str(lower), str(copy)], check=True, capture_output=True)
            return copy
        self.stack.callback(unmount, work / "merged")
        return work / "merged"

    def host_path(self, root: Path, source: str, m: Mount) -> Path:
        src = posixpath.normpath("/" + source)
        try:
            host = resolve_in_root(root, src)
        except OSError as e:
            raise SolveError(f"failed to mount {m.target}: {src}: {e.strerror}", self.v) from None
        if not os.path.lexists(host):
            raise SolveError(f'failed to mount {m.target}: "{src}": not found', self.v)
        return host

    def bind(self, m: Mount) -> exec_spec.Mount:
        root = self.view(m.input, m.source)
        if not m.readonly:
            root = self.writable(root)
        host = self.host_path(root, m.source, m)
        return exec_spec.Mount("bind", str(host), m.target, ["rbind", "ro"] if m.readonly else ["rbind"])

    def cache(self, m: Mount) -> exec_spec.Mount:
        from workbench.cache.mounts import CacheMountError, CacheMounts

        cache_id = m.id or posixpath.normpath("/" + m.target)
        seed = ""
        if m.input >= 0:
            src_v = self.v.inputs[m.input]
            seed = f"{self.inputs[m.input].key or src_v.digest}:{posixpath.normpath('/' + m.source)}"

        def seed_from() -> Path | None:
            return self.host_path(self.view(m.input, m.source), m.source, m) if m.input >= 0 else None

        try:
            path = self.stack.enter_context(CacheMounts(self.worker.root).acquire(
                cache_id, m.sharing, m.mode, m.uid, m.gid, seed, seed_from, self.job.cancel))
        except (CacheMountError, OSError, subprocess.CalledProcessError) as e:
            raise SolveError(f"cache mount {m.target}: {e}", self.v) from None
        return exec_spec.Mount("bind", str(path), m.target, ["rbind", "ro"] if m.readonly else ["rbind"])

    def secret_dir(self) -> Path:
        """A private (0700) tmpfs outside every snapshot, for this step's secret files."""
        if self._secret_dir is None:
            from workbench.snapshot.overlay import unmount

            path = self.tmpdir("secrets")
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,nosuid,nodev,noexec", "tmpfs", str(path)],
                                  capture_output=True)
            if proc.returncode == 0:
                self.stack.callback(unmount, path)
            self._secret_dir = path
        return self._secret_dir

    def secret(self, m: Mount, n: int, out: StepMounts) -> None:
        from workbench.solver.session import SecretNotFound, SessionError

        source = self.job.session.secrets.get(m.id)
        if source is None:
            if m.required:
                raise SolveError(f"secret {m.id}: not found", self.v)
            return
        try:
            value = source.read()
        except SecretNotFound as e:
            if m.required:
                raise SolveError(str(e), self.v) from None
            return
        except SessionError as e:
            raise SolveError(str(e), self.v) from None
        if m.target:
            path = self.secret_dir() / f"secret-{n}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, value)
                os.fchown(fd, m.uid or 0, m.gid or 0)
                os.fchmod(fd, 0o400 if m.mode is None else m.mode & 0o7777)
            finally:
                os.close(fd)
            options = ["rbind", "ro", "nosuid", "nodev", "noexec"]
            out.mounts.append(exec_spec.Mount("bind", str(path), m.target, options))
        if m.env:
            out.env.append(f"{m.env}={value.decode('utf-8', 'replace')}")

    def ssh(self, m: Mount, out: StepMounts) -> None:
        from workbench.executor.ssh import AgentProxy, SSHForwardError, agent_socket

        ssh_id = m.id or "default"
        paths = self.job.session.ssh.get(ssh_id)
        if paths is None:
            if m.required:
                raise SolveError(f'no SSH key "{ssh_id}" forwarded from the client', self.v)
            return
        try:
            agent = agent_socket(paths, ssh_id)
        except SSHForwardError as e:
            raise SolveError(str(e), self.v) from None
        proxy = AgentProxy(agent, self.worker.snapshots.tmp, m.uid or 0, m.gid or 0,
                           0o600 if m.mode is None else m.mode & 0o777)
        self.stack.callback(proxy.close)
        out.mounts.append(exec_spec.Mount("bind", str(proxy.path), m.target, ["rbind"]))


def prepare(worker: Worker, job: SolveJob, v: Vertex, inputs: list[Result], stack: ExitStack) -> StepMounts:
    """Set up `v`'s mounts (undone when `stack` closes); SolveError when one cannot be."""
    op = v.op
    assert isinstance(op, ExecOp)
    check_exec(job.session, v)
    out = StepMounts()
    mounter = _Mounter(worker, job, v, inputs, stack)
    for n, m in enumerate(op.mounts):
        if m.type == "bind":
            out.mounts.append(mounter.bind(m))
        elif m.type == "cache":
            out.mounts.append(mounter.cache(m))
        elif m.type == "tmpfs":
            options = ["nosuid"] + (["ro"] if m.readonly else []) + ([f"size={m.size}"] if m.size > 0 else [])
            out.mounts.append(exec_spec.Mount("tmpfs", "tmpfs", m.target, options))
        elif m.type == "secret":
            mounter.secret(m, n, out)
        elif m.type == "ssh":
            mounter.ssh(m, out)
    ssh_targets = [m.target for m in op.mounts if m.type == "ssh"]
    if ssh_targets and not any(e.startswith("SSH_AUTH_SOCK=") for e in op.env):
        out.env.append(f"SSH_AUTH_SOCK={ssh_targets[0]}")  # as BuildKit's llb: the first ssh mount's socket
    return out
