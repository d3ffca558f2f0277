"""Enter a user namespace (root inside it, the user's subordinate ids mapped) with a mount namespace of its own.

`enter()` runs once, early, while the process is single-threaded: a forked helper waits until we have unshared,
writes our maps with newuidmap/newgidmap (setuid helpers that check /etc/subuid and /etc/subgid), and we become
uid 0 of the namespace. Without subordinate ranges (or without the helpers) we map our own id alone: files of
other owners cannot exist then, which the one-line `Namespace.note` says.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass

from workbench.rootless.subid import SUBGID, SUBUID, map_args, ranges

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
_IDENTITY = ("0", "0", "4294967295")


class UsernsError(RuntimeError):
    """The user namespace could not be entered; the message says why and what to do."""


@dataclass(frozen=True)
class Namespace:
    """The namespace this process entered: the user's ids outside, how many ids are mapped, and the note."""

    uid: int
    gid: int
    ids: int
    note: str = ""
    """One line said once per command when running with a fallback ("" when not)."""


_ENTERED: Namespace | None = None


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def inside_user_namespace() -> bool:
    """Whether this process is in a user namespace other than the initial one (ids not mapped 1:1)."""
    try:
        with open("/proc/self/uid_map") as f:
            lines = f.read().split("\n")
    except OSError:
        return False
    return tuple(lines[0].split()) != _IDENTITY


def owner_here(uid: int, gid: int) -> tuple[int, int]:
    """The owner a file of `uid`:`gid` gets here: root in a single-uid namespace (no other id exists), else as is."""
    if _ENTERED is not None and _ENTERED.ids == 1:
        return 0, 0
    return uid, gid


def entered() -> Namespace | None:
    """The namespace `enter()` made (inherited by forked children), None when it was not called."""
    return _ENTERED


def outside_uid() -> int:
    """Our uid as the host knows it (the user's own uid inside our namespace)."""
    if _ENTERED is not None:
        return _ENTERED.uid
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inner, outer, _ = line.split()
                if inner == str(os.getuid()):
                    return int(outer)
    except (OSError, ValueError):
        pass
    return os.getuid()


def single_uid_note(user: str) -> str:
    return (f"rootless: no subordinate ids for {user} in {SUBUID} and {SUBGID}: builds map your uid alone (files in "
            f"images are owned by root; chown to another id fails). An admin fixes it with: "
            f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}")


def failure_hint() -> str:
    """A line for a failed build in a single-uid namespace, where a chown to another id cannot work ("" else)."""
    if _ENTERED is None or _ENTERED.ids != 1:
        return ""
    return (f"rootless: only your own uid is mapped (no subordinate ids in {SUBUID} / {SUBGID}), so a chown or "
            f"USER to any other id fails here with \"Invalid argument\"; an admin adds ids with: usermod "
            f"--add-subuids 100000-165535 --add-subgids 100000-165535 {_user_name(_ENTERED.uid)}")


def unmapped_ids(uid: int, gid: int, groups: list[int]) -> str:
    """Why a process as `uid`:`gid` (with `groups`) cannot start in this user namespace, an id it does not map
    (runc says only "unable to setup user: invalid argument"), or "" when every id is mapped."""
    if not inside_user_namespace():
        return ""
    uids, gids = _id_map("uid"), _id_map("gid")
    missing = [f"uid {uid}"] * (not _maps(uids, uid)) + [f"gid {g}" for g in dict.fromkeys([gid, *groups])
                                                         if not _maps(gids, g)]
    if not missing:
        return ""
    fix = f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {_user_name(outside_uid())}"
    if sum(count for _, _, count in uids) == 1:
        return (f"rootless: this step runs as {' and '.join(missing)}, but only your own uid is mapped (no "
                f"subordinate ids in {SUBUID} / {SUBGID}), so no process can start as it; an admin adds ids "
                f"with: {fix}")
    return (f"rootless: this step runs as {' and '.join(missing)}, outside the ids your subordinate ranges in "
            f"{SUBUID} / {SUBGID} map, so no process can start as it; an admin widens them with: {fix}")


def _id_map(kind: str) -> list[tuple[int, ...]]:
    """The rows (inside, outside, count) of /proc/self/{kind}_map; [] when unreadable."""
    try:
        with open(f"/proc/self/{kind}_map") as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def _maps(rows: list[tuple[int, ...]], inner: int) -> bool:
    return not rows or any(start <= inner < start + count for start, _, count in rows)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def enter() -> Namespace:
    """Become root of a new user namespace (and mount namespace, mounts private); idempotent. Raises UsernsError."""
    global _ENTERED
    if _ENTERED is not None:
        return _ENTERED
    uid, gid = os.getuid(), os.getgid()
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    subuids, subgids = ranges(SUBUID, name, uid), ranges(SUBGID, name, uid)  # newgidmap matches the user, too
    tools = shutil.which("newuidmap"), shutil.which("newgidmap")
    if subuids and subgids and all(tools):
        ids = 1 + min(sum(r.length for r in subuids), sum(r.length for r in subgids))
        _unshare_mapped(map_args(uid, subuids), map_args(gid, subgids))
        note = ""
    else:
        _unshare(uid)
        _write_single_maps(uid, gid)
        ids = 1
        who = name or str(uid)
        note = (single_uid_note(who) if not (subuids and subgids) else
                "rootless: newuidmap/newgidmap not found: builds map your uid alone (files in images are owned by "
                "root; chown to another id fails). An admin fixes it with: apt-get install uidmap")
    _become_root()
    _ENTERED = Namespace(uid, gid, ids, note)
    return _ENTERED


def _unshare(uid: int) -> None:
    if _libc().unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        raise explain_failure("unshare", ctypes.get_errno(), uid=uid)


def _unshare_mapped(uid_args: list[str], gid_args: list[str]) -> None:
    """unshare, while a forked helper (still outside) waits for it and then writes our maps."""
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the forked helper
        os.close(go_w)
        os.close(err_r)
        code = 1
        try:
            if os.read(go_r, 1) == b"1":
                for tool, args in (("newuidmap", uid_args), ("newgidmap", gid_args)):
                    proc = subprocess.run([tool, str(parent), *args], capture_output=True, text=True)
                    if proc.returncode != 0:
                        os.write(err_w, f"{tool} {' '.join(args)}: {proc.stderr.strip()}".encode())
                        break
                else:
                    code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(err_w)
    failed = _libc().unshare(CLONE_NEWUSER | CLONE_NEWNS)
    errno_ = ctypes.get_errno()
    os.write(go_w, b"0" if failed else b"1")
    os.close(go_w)
    _, status = os.waitpid(helper, 0)
    with os.fdopen(err_r, "rb") as f:
        message = f.read().decode(errors="replace")
    if failed:
        raise explain_failure("unshare", errno_, uid=os.getuid())
    if os.waitstatus_to_exitcode(status) != 0:
        raise explain_failure("newuidmap", 0, detail=message or "the id-map helper failed", uid=os.getuid())


def _write_single_maps(uid: int, gid: int) -> None:
    """Map our own uid/gid as 0 (allowed unprivileged once setgroups is denied)."""
    try:
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                           ("/proc/self/gid_map", f"0 {gid} 1")):
            with open(path, "w") as f:
                f.write(text)
    except OSError as e:
        raise explain_failure("uid_map", e.errno or 0, detail=str(e), uid=uid) from None


def _become_root() -> None:
    # The supplementary groups are kept (podman's keep-groups): unmapped ones show as the overflow gid, yet the
    # kernel still grants their access, so group-readable contexts, secrets, device nodes and sockets still open.
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if _libc().mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise explain_failure("mount", ctypes.get_errno(), uid=outside_uid())


def explain_failure(step: str, errno_: int, detail: str = "", uid: int | None = None) -> UsernsError:
    """The one-line error for a namespace that could not be entered at `step` (unshare, newuidmap, uid_map, mount)."""
    reason = detail or os.strerror(errno_)
    if step == "unshare" and errno_ == errno.EINVAL:
        return UsernsError("rootless: cannot create a user namespace: this process already runs threads (the "
                           "namespace must be entered first, while it has one)")
    if step == "unshare":
        from workbench.rootless.diagnose import userns_disabled_message

        return UsernsError(userns_disabled_message() or
                           f"rootless: cannot create a user namespace ({reason}); user namespaces may be disabled: "
                           f"check sysctl kernel.unprivileged_userns_clone and user.max_user_namespaces")
    if step == "newuidmap":
        return UsernsError(f"rootless: mapping the subordinate ids of uid {uid} failed: {reason}; check "
                           f"{SUBUID} and {SUBGID} and that newuidmap/newgidmap (package uidmap) are setuid root")
    return UsernsError(f"rootless: entering the user namespace failed at {step}: {reason}")


def needed(argv: list[str]) -> bool:
    """Whether the command `argv` uses the local engine (and so must run in the namespace when not root)."""
    if any(a in ("-h", "--help") for a in argv):
        return False
    command = argv[0] if argv else ""
    if command in ("build", "du", "prune", "tui", "debug"):
        return not _remote(argv)
    if command == "dap":  # each launch picks its engine: local builds need the namespace, remote ones work in it;
        # a listener stays outside, where it can look at its peers, and serves each connection in a child that enters
        return not any(a == "--listen" or a.startswith("--listen=") for a in argv)
    return command in ("image", "history", "replay", "devices", "")


def _remote(argv: list[str]) -> bool:
    return any(a == "--addr" or a.startswith("--addr=") for a in argv) or bool(os.environ.get("BUILDKIT_HOST"))


def prepare(argv: list[str]) -> None:
    """For a command `argv` of the CLI: enter the namespace when not root and it uses the local engine, and say
    the fallback note once. A build server's child is inside already and only says the note."""
    if not needed(argv):
        return
    if _ENTERED is None:
        if os.geteuid() == 0:
            return
        enter()
    from workbench.rootless.net import mode

    try:
        mode()
    except ValueError as e:
        raise UsernsError(str(e)) from None
    if _ENTERED is not None and _ENTERED.note:
        print(_ENTERED.note, file=sys.stderr)
