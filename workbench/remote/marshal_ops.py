"""One op of our graph as BuildKit's `pb.Op` (the fields client/llb fills), and the caps it needs.

Input indices follow LLB's conventions: -1 is scratch (`Empty`) or no output (`SkipOutput`); a FileOp action's
input `len(op.inputs)+k` is the result of its action k.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from workbench.llb.ops import (
    Copy,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    LocalSource,
    Mkdir,
    Mkfile,
    Mount,
    Rm,
    ScratchSource,
    Vertex,
)
from workbench.progress.events import SourceLocation
from workbench.remote.proto import ops_pb2 as pb

EMPTY = -1  # pb.Empty / pb.SkipOutput
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INT = re.compile(r"[0-9]+")

# Adds a vertex to the op being built: its index in op.inputs, or EMPTY when it is scratch.
AddInput = Callable[[Vertex], int]


class MarshalError(Exception):
    """Our graph has something that BuildKit's LLB (or the daemon's caps) cannot express; one line, naming
    the step and its Dockerfile line when known (`location`, for the caller's error with the lines shown)."""

    def __init__(self, message: str, location: SourceLocation | None = None) -> None:
        super().__init__(message)
        self.location = location


@dataclass(frozen=True)
class OpOptions:
    """What the caller decides about every op: the platform, host networking, the session of local sources."""

    platform: str = "linux/amd64"
    network_host: bool = False
    session_id: str = ""
    shared_key_hint: str = ""
    unique_id: str = ""
    """`local.unique` of local sources without a session: sets apart the vertices of other contexts and
    clients, which the daemon would otherwise merge with ours while both run, serving one's files to both."""


def op_bytes(pop: pb.Op) -> bytes:
    """`pop` as Go's protobuf marshals it (deterministic, and the `op` oneof last, after platform and
    constraints: "to preserve compatibility with historic wire output"). The daemon re-marshals every op and
    digests those bytes, so only this order keeps our digests those of its vertices."""
    which = pop.WhichOneof("op")
    if which is None:
        return pop.SerializeToString(deterministic=True)
    head, tail = pb.Op(), pb.Op()
    head.CopyFrom(pop)
    head.ClearField(which)  # type: ignore[arg-type]
    getattr(tail, which).CopyFrom(getattr(pop, which))
    return head.SerializeToString(deterministic=True) + tail.SerializeToString(deterministic=True)


def platform_pb(text: str) -> pb.Platform:
    """`os/arch[/variant]` as pb.Platform."""
    parts = text.split("/")
    if len(parts) < 2 or not all(parts):
        raise MarshalError(f"invalid platform {text!r} (os/arch[/variant])")
    return pb.Platform(OS=parts[0], Architecture=parts[1], Variant="/".join(parts[2:]))


def _user_opt(text: str, base: int) -> pb.UserOpt:
    if _INT.fullmatch(text):
        return pb.UserOpt(byID=int(text) & 0xFFFFFFFF)
    return pb.UserOpt(byName=pb.NamedUserOpt(name=text, input=base))


def chown_pb(owner: str, base: int) -> pb.ChownOpt | None:
    """A --chown `user[:group]` as llb.WithUser marshals it; names are read from input `base`'s /etc files."""
    if not owner:
        return None
    user, _, group = owner.partition(":")
    out = pb.ChownOpt()
    if user:
        out.user.CopyFrom(_user_opt(user, base))
    if group:
        out.group.CopyFrom(_user_opt(group, base))
    return out


def source_op(v: Vertex, opts: OpOptions) -> tuple[pb.Op, set[str]]:
    """An image, local, git or http source."""
    op = v.op
    attrs: dict[str, str] = {}
    caps: set[str] = set()
    if isinstance(op, ImageSource):
        ref = op.ref
        if op.manifest_digest and "@" not in ref:
            ref += "@" + op.manifest_digest  # pinned, as the Dockerfile frontend pins what it resolved
        ident = "docker-image://" + ref
        caps.add("source.image")
        platform = op.platform
    elif isinstance(op, LocalSource):
        ident = "local://" + op.name
        attrs["local.sharedkeyhint"] = opts.shared_key_hint or op.name
        caps |= {"source.local", "source.local.sharedkeyhint"}
        if op.excludes:
            attrs["local.excludepatterns"] = json.dumps(list(op.excludes), separators=(",", ":"))
            caps.add("source.local.excludepatterns")
        if opts.session_id:
            attrs["local.session"] = opts.session_id
            caps.add("source.local.sessionid")
        elif opts.unique_id:  # as BuildKit's llb.Local: a unique ID wherever no session is named
            attrs["local.unique"] = opts.unique_id
            caps.add("source.local.unique")
        platform = opts.platform
    elif isinstance(op, HttpSource):
        ident = op.url
        caps.add("source.http")
        if op.checksum:
            attrs["http.checksum"] = op.checksum
            caps.add("source.http.checksum")
        if op.filename:
            attrs["http.filename"] = op.filename
        if op.mode is not None:
            attrs["http.perm"] = "0" + format(op.mode, "o")
            caps.add("source.http.perm")
        platform = opts.platform
    elif isinstance(op, GitSource):
        ident, attrs, caps = _git(op)
        platform = opts.platform
    else:
        raise MarshalError(f"{type(op).__name__} is not a source")
    pop = pb.Op(source=pb.SourceOp(identifier=ident, attrs=attrs), platform=platform_pb(platform))
    pop.constraints.SetInParent()
    return pop, caps


def _git(op: GitSource) -> tuple[str, dict[str, str], set[str]]:
    """llb.Git: the id is host/path#ref[:subdir] (the same for https and ssh), the full URL an attr."""
    url = op.remote
    scp = re.fullmatch(r"([^@/:]+@)?([^/:]+):(?!//)(.*)", url)
    if scp:
        scheme, host, path = "ssh", scp.group(2), scp.group(3)
    else:
        if not re.match(r"^[a-z][a-z0-9+.-]*://", url):
            url = "https://" + url
        scheme, _, rest = url.partition("://")
        hostpart, _, path = rest.partition("/")
        host = hostpart.rpartition("@")[2]
    path = path.split("#", 1)[0]
    ident = "git://" + host + posixpath.normpath(posixpath.join("/", path))
    if op.ref or op.subdir:
        ident += "#" + op.ref + (":" + op.subdir if op.subdir else "")
    attrs = {"git.fullurl": url, "git.authtokensecret": "GIT_AUTH_TOKEN", "git.authheadersecret": "GIT_AUTH_HEADER"}
    caps = {"source.git", "source.git.fullurl"}
    if op.subdir:
        caps.add("source.git.subdir")
    if op.keep_git_dir:
        attrs["git.keepgitdir"] = "true"
        caps.add("source.git.keepgitdir")
    if scheme == "ssh":
        attrs["git.mountsshsock"] = "default"
        caps.add("source.git.mountsshsock")
    return ident, attrs, caps


def _mount_pb(m: Mount, add: AddInput, v: Vertex, caps: set[str]) -> tuple[pb.Mount | None, pb.SecretEnv | None]:
    selector = "" if m.source in ("", "/") else m.source
    if m.type == "bind":
        caps |= {"exec.mount.bind", "exec.mount.bind.readwrite-nooutput"}
        if selector:
            caps.add("exec.mount.selector")
        src = add(v.inputs[m.input]) if m.input >= 0 else EMPTY
        return pb.Mount(input=src, selector=selector, dest=m.target, output=EMPTY, readonly=m.readonly,
                        mountType=pb.BIND), None
    if m.type == "cache":
        caps |= {"exec.mount.cache", "exec.mount.cache.sharing"}
        if m.input >= 0:
            src = add(v.inputs[m.input])
        elif m.uid is not None or m.gid is not None or m.mode is not None:
            # the Dockerfile frontend seeds such a cache with a scratch dir of that owner and mode
            owner = f"{m.uid or 0}:{m.gid or 0}"
            seed = Vertex(FileOp((Mkdir("/cache", 0o755 if m.mode is None else m.mode, True, owner),)),
                          inputs=(Vertex(ScratchSource()),), name="[internal] settings cache mount permissions")
            src, selector = add(seed), "/cache"
        else:
            src = EMPTY
        if selector:
            caps.add("exec.mount.selector")
        sharing = {"shared": pb.SHARED, "private": pb.PRIVATE, "locked": pb.LOCKED}.get(m.sharing)
        if sharing is None:
            raise MarshalError(f"invalid cache sharing option: {m.sharing!r}")
        return pb.Mount(input=src, selector=selector, dest=m.target, output=EMPTY, readonly=m.readonly,
                        mountType=pb.CACHE, cacheOpt=pb.CacheOpt(ID=m.id or m.target, sharing=sharing)), None
    if m.type == "tmpfs":
        caps.add("exec.mount.tmpfs")
        out = pb.Mount(input=EMPTY, dest=m.target, output=EMPTY, mountType=pb.TMPFS)
        if m.size:
            caps.add("exec.mount.tmpfs.size")
            out.TmpfsOpt.size = m.size
        return out, None
    if m.type == "secret":
        caps.add("exec.mount.secret")
        env = None
        if m.env:
            caps.add("exec.secretenv")
            env = pb.SecretEnv(ID=m.id, name=m.env, optional=not m.required)
        if not m.target:
            return None, env
        opt = pb.SecretOpt(ID=m.id, uid=m.uid or 0, gid=m.gid or 0, mode=0o400 if m.mode is None else m.mode,
                           optional=not m.required)
        return pb.Mount(input=EMPTY, dest=m.target, output=EMPTY, mountType=pb.SECRET, secretOpt=opt), env
    if m.type == "ssh":
        caps.add("exec.mount.ssh")
        ssh = pb.SSHOpt(ID=m.id or "default", uid=m.uid or 0, gid=m.gid or 0,
                        mode=0o600 if m.mode is None else m.mode, optional=not m.required)
        return pb.Mount(input=EMPTY, dest=m.target, output=EMPTY, mountType=pb.SSH, SSHOpt=ssh), None
    raise MarshalError(f"unknown mount type {m.type!r}")


def exec_op(v: Vertex, add: AddInput, opts: OpOptions, caps_supported: frozenset[str]) -> tuple[pb.Op, set[str]]:
    """A RUN: the rootfs and the other mounts in target order (as llb.ExecOp sorts them)."""
    op = v.op
    assert isinstance(op, ExecOp)
    caps = {"exec.meta.base"}
    env = list(op.env)
    if "exec.meta.setsdefaultpath" in caps_supported:
        caps.add("exec.meta.setsdefaultpath")
    elif not any(e.startswith("PATH=") for e in env):
        env.append(DEFAULT_PATH)  # what llb does for a daemon that does not set it
    network = {"default": pb.HOST if opts.network_host else pb.UNSET, "sandbox": pb.UNSET, "host": pb.HOST,
               "none": pb.NONE}.get(op.network)
    if network is None:
        raise MarshalError(f"unsupported network mode: {op.network}")
    if network != pb.UNSET:
        caps.add("exec.meta.network")
    security = {"sandbox": pb.SANDBOX, "insecure": pb.INSECURE}.get(op.security)
    if security is None:
        raise MarshalError(f"invalid security mode {op.security!r}")
    if security != pb.SANDBOX:
        caps.add("exec.meta.security")
    # No empty dirs left where mounts (/run/secrets/x) were. llb always sets it, without a cap (the daemons do
    # not register `exec.meta.removemountstubs.recursive`); v0.8 ignores the field.
    meta = pb.Meta(args=op.args, env=env, cwd=op.cwd, user=op.user, removeMountStubsRecursive=True)
    peo = pb.ExecOp(meta=meta, network=network, security=security)
    rootfs = Mount("bind", "/", input=0)
    mounts: list[pb.Mount] = []
    for m in sorted((rootfs, *op.mounts), key=lambda m: m.target):
        if m is rootfs:
            src = add(v.inputs[0]) if v.inputs else EMPTY
            mounts.append(pb.Mount(input=src, dest="/", output=0))
            continue
        mount, secret_env = _mount_pb(m, add, v, caps)
        if mount is not None:
            mounts.append(mount)
        if secret_env is not None:
            peo.secretenv.append(secret_env)
    order = {pb.SECRET: 1, pb.SSH: 2}  # llb lists secret and ssh mounts after the sorted ones
    peo.mounts.extend(sorted(mounts, key=lambda m: order.get(m.mountType, 0)))
    for d in op.devices:
        caps.add("exec.meta.cdi")
        peo.cdiDevices.append(pb.CDIDevice(name=d.name, optional=not d.required))
    pop = pb.Op(exec=peo, platform=platform_pb(opts.platform))
    pop.constraints.SetInParent()
    return pop, caps


def normalize_path(p: str, keep_slash: bool) -> str:
    """client/llb normalizePath with the root as parent: absolute, cleaned, a trailing `/` or `/.` kept."""
    out = posixpath.normpath(posixpath.join("/", p))
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    if keep_slash:
        if p.endswith("/") and not out.endswith("/"):
            out += "/"
        elif p.endswith("/."):
            out = (out if out == "/" else out + "/") + "."
    return out


def copy_pb(c: Copy, base: int) -> tuple[pb.FileActionCopy, set[str]]:
    """A Copy as llb's fileActionCopy marshals it (COPY --parents as the Dockerfile frontend spells it)."""
    caps: set[str] = set()
    src = c.src
    include = list(c.include_patterns)
    if c.parents:
        parent, sep, pattern = src.partition("/./")
        if not sep:
            parent, pattern = "/", src
        src = parent
        include.append(normalize_path(pattern, False).lstrip("/"))
    dest = normalize_path(c.dest, True)
    if c.dest_is_dir and not dest.endswith("/"):
        dest += "/"
    out = pb.FileActionCopy(src=normalize_path(src, False), dest=dest, followSymlink=c.follow_symlinks,
                            dirCopyContents=c.dir_copy_contents, attemptUnpackDockerCompatibility=c.attempt_unpack,
                            createDestPath=c.create_dest_path, allowWildcard=c.allow_wildcard,
                            allowEmptyWildcard=c.allow_empty_wildcard, timestamp=-1,
                            include_patterns=include, exclude_patterns=c.exclude_patterns, mode=-1)
    owner = chown_pb(c.owner, base)
    if owner is not None:
        out.owner.CopyFrom(owner)
    if c.mode is not None:
        out.mode = c.mode
    elif c.mode_str:
        out.modeStr = c.mode_str
        caps.add("file.copy.modestring")
    if include or c.exclude_patterns:
        caps.add("file.copy.includeexcludepatterns")
    return out, caps


def file_op(v: Vertex, add: AddInput) -> tuple[pb.Op, set[str]]:
    """Actions applied in turn on input 0; each after the first works on the previous one's result."""
    op = v.op
    assert isinstance(op, FileOp)
    caps = {"file.base"}
    pfo = pb.FileOp()
    # input indices first: an action's `len(inputs)+k` needs the final count of inputs
    first = add(v.inputs[0]) if v.inputs else EMPTY
    seconds = [add(v.inputs[a.src_input]) if isinstance(a, Copy) else EMPTY for a in op.actions]
    n_inputs = max([first, *seconds, EMPTY]) + 1
    for k, a in enumerate(op.actions):
        base = first if k == 0 else n_inputs + k - 1
        action = pb.FileAction(input=base, secondaryInput=seconds[k],
                               output=0 if k == len(op.actions) - 1 else EMPTY)
        if isinstance(a, Copy):
            copy, more = copy_pb(a, base)
            caps |= more
            action.copy.CopyFrom(copy)
        elif isinstance(a, Mkdir):
            action.mkdir.CopyFrom(pb.FileActionMkDir(path=normalize_path(a.path, False), mode=a.mode,
                                                     makeParents=a.make_parents, timestamp=-1))
            if (owner := chown_pb(a.owner, base)) is not None:
                action.mkdir.owner.CopyFrom(owner)
        elif isinstance(a, Mkfile):
            action.mkfile.CopyFrom(pb.FileActionMkFile(path=normalize_path(a.path, False), mode=a.mode & 0o777,
                                                       data=a.data, timestamp=-1))
            if (owner := chown_pb(a.owner, base)) is not None:
                action.mkfile.owner.CopyFrom(owner)
        elif isinstance(a, Rm):
            if a.allow_wildcard:
                caps.add("file.rm.wildcard")
            action.rm.CopyFrom(pb.FileActionRm(path=normalize_path(a.path, False), allowNotFound=a.allow_not_found,
                                               allowWildcard=a.allow_wildcard))
        else:
            raise MarshalError(f"file action {type(a).__name__} has no LLB form")
        pfo.actions.append(action)
    pop = pb.Op(file=pfo)  # no platform: llb leaves file ops platform-less
    pop.constraints.SetInParent()
    return pop, caps


def merge_op(v: Vertex, add: AddInput, opts: OpOptions) -> tuple[pb.Op, set[str]]:
    """The inputs stacked (scratch inputs dropped by the caller, as llb.Merge drops them)."""
    merge = pb.MergeOp()
    for i in v.inputs:
        merge.inputs.append(pb.MergeInput(input=add(i)))
    pop = pb.Op(merge=merge, platform=platform_pb(opts.platform))
    pop.constraints.SetInParent()
    return pop, {"mergeop"}


def merge_as_copies(v: Vertex, add: AddInput) -> tuple[pb.Op, set[str]]:
    """A merge for a daemon without MergeOp: each later input copied onto the first, whole, owners kept."""
    indices = [add(i) for i in v.inputs]
    pfo = pb.FileOp()
    n = max(indices) + 1
    for k, second in enumerate(indices[1:]):
        copy = pb.FileActionCopy(src="/", dest="/", dirCopyContents=True, createDestPath=True, mode=-1,
                                 timestamp=-1)
        pfo.actions.append(pb.FileAction(input=indices[0] if k == 0 else n + k - 1, secondaryInput=second,
                                         output=0 if k == len(indices) - 2 else EMPTY, copy=copy))
    pop = pb.Op(file=pfo)
    pop.constraints.SetInParent()
    return pop, {"file.base"}
