"""What a user needs to build rootless, found on this host, with the commands an admin runs to fix each gap.

Read by `workbench doctor` (its rootless checks) and by `userns.explain_failure` (the one line said when a
user namespace cannot be created). Each `Finding` is (status, name, text); a text ends with the exact fix.
Nothing here needs privileges except the probes run as another user (`as_user`, from doctor as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from workbench.rootless.subid import SUBGID, SUBUID, ranges

SYSCTL_DROPIN = "/etc/sysctl.d/50-workbench-userns.conf"
COPY_SLOWER = "about 1.3x"
"""How much longer a build takes with the copying snapshotter than with overlayfs: bench/snapshotter.py
measured w1 1.30x-1.49x and w3 1.13x-1.31x (medians of 3 cold builds, as root, on the shared 2-core VM).
Here (the lowest layer) so that the snapshot manager's line and doctor's say the same."""
_CAP_SETGID, _CAP_SETUID = 6, 7
_PROBE_TIMEOUT = 30


class Finding(NamedTuple):
    status: str  # OK | WARN | FAIL
    name: str
    text: str


class Sysctl(NamedTuple):
    """A kernel setting that keeps user namespaces from ordinary users, and the fix."""

    key: str
    value: str
    want: str
    why: str


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_blockers(proc_sys: str = "/proc/sys") -> list[Sysctl]:
    """The settings (of those that exist on this kernel) that disable unprivileged user namespaces."""
    found = []
    if _read(f"{proc_sys}/kernel/unprivileged_userns_clone") == "0":
        found.append(Sysctl("kernel.unprivileged_userns_clone", "0", "1",
                            "Debian's kernels before 11 (bullseye) and some hardened ones default to 0"))
    if _read(f"{proc_sys}/user/max_user_namespaces") == "0":
        found.append(Sysctl("user.max_user_namespaces", "0", "28633", "RHEL/CentOS 7 default to 0"))
    if _read(f"{proc_sys}/kernel/apparmor_restrict_unprivileged_userns") == "1":
        found.append(Sysctl("kernel.apparmor_restrict_unprivileged_userns", "1", "0",
                            "Ubuntu 23.10 and later let only programs with an AppArmor profile allowing `userns` "
                            "create them"))
    return found


def sysctl_fix(blockers: list[Sysctl]) -> str:
    """The commands an admin runs, now and for every boot."""
    now = " ".join(f"{b.key}={b.want}" for b in blockers)
    keep = "\\n".join(f"{b.key}={b.want}" for b in blockers)
    return f"sudo sysctl -w {now} && printf '{keep}\\n' | sudo tee {SYSCTL_DROPIN}"


def userns_disabled_message(proc_sys: str = "/proc/sys") -> str | None:
    """The one-line error when user namespaces are disabled here (None when no setting forbids them)."""
    blockers = userns_blockers(proc_sys)
    if not blockers:
        return None
    found = ", ".join(f"{b.key} = {b.value} ({b.why})" for b in blockers)
    return (f"rootless: user namespaces are disabled on this host: {found}; an admin enables them: "
            f"{sysctl_fix(blockers)}")


# -- subordinate ids and the helpers that map them ----------------------------------------------------------


def free_range(count: int = 65536, files: tuple[Path, ...] = (SUBUID, SUBGID)) -> tuple[int, int]:
    """(first, last) of `count` ids after every range `files` hand out (from 100000, on a multiple of count)."""
    end = 100000
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                end = max(end, int(parts[1]) + int(parts[2]))
    first = -(-end // count) * count
    return first, first + count - 1


def check_subids(name: str, uid: int) -> Finding:
    uids, gids = ranges(SUBUID, name, uid), ranges(SUBGID, name, uid)
    if uids and gids:
        shown = f"{sum(r.length for r in uids)} uids from {uids[0].start}, {sum(r.length for r in gids)} gids"
        return Finding("OK", "subids", f"{name} has subordinate ids ({shown}): images keep their file owners")
    missing = " and ".join(str(p) for p, r in ((SUBUID, uids), (SUBGID, gids)) if not r)
    first, last = free_range()
    return Finding("WARN", "subids",
                   f"{name} has no subordinate ids in {missing}: builds map your uid alone (files in images are owned "
                   f"by root, chown to other ids fails); fix: sudo usermod --add-subuids {first}-{last} "
                   f"--add-subgids {first}-{last} {name}")


def _file_caps(path: str) -> int:
    """The permitted capability bits of `path`'s file capabilities (0 when it has none)."""
    try:
        data = os.getxattr(path, "security.capability")
    except OSError:
        return 0
    return struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else 0


def check_idmap_helpers() -> Finding:
    problems, found = [], []
    for tool, cap in (("newuidmap", _CAP_SETUID), ("newgidmap", _CAP_SETGID)):
        path = shutil.which(tool)
        if path is None:
            problems.append(f"{tool} is not installed")
            continue
        st = os.stat(path)
        if (st.st_uid == 0 and st.st_mode & stat.S_ISUID) or _file_caps(path) & (1 << cap):
            found.append(path)
        else:
            problems.append(f"{path} is neither setuid root nor has the file capability it needs")
    if not problems:
        return Finding("OK", "newuidmap", f"{' and '.join(found)} map subordinate ids (setuid root or file caps)")
    fix = ("sudo apt-get install uidmap" if any("not installed" in p for p in problems)
           else "sudo chmod u+s $(command -v newuidmap newgidmap) (or sudo apt-get install --reinstall uidmap)")
    return Finding("FAIL", "newuidmap", f"{'; '.join(problems)}: subordinate ids cannot be mapped; fix: {fix}")


def check_userns() -> Finding:
    blockers = userns_blockers()
    if blockers:
        found = ", ".join(f"{b.key} = {b.value}" for b in blockers)
        return Finding("FAIL", "userns", f"user namespaces are disabled ({found}): rootless builds cannot run; "
                                         f"fix: {sysctl_fix(blockers)}")
    limit = _read("/proc/sys/user/max_user_namespaces")
    return Finding("OK", "userns", f"unprivileged user namespaces are enabled (user.max_user_namespaces = {limit})")


# -- probes in a user namespace -----------------------------------------------------------------------------

# Run by a child python: unshare a user and a mount namespace mapping our id as 0, mount overlay with userxattr
# on a temp dir, write through it, unmount. Prints "ok", or "unshare: ERR" / "mount: ERR" / "write: ..."
_PROBE = r"""
import ctypes, os, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000 | 0x00020000) != 0:
    print("unshare:", os.strerror(ctypes.get_errno())); sys.exit()
for name, text in (("uid_map", f"0 {uid} 1"), ("setgroups", "deny"), ("gid_map", f"0 {gid} 1")):
    with open(f"/proc/self/{name}", "w") as f:
        f.write(text)
libc.mount(b"none", b"/", None, 0x4000 | (1 << 18), None)
top = tempfile.mkdtemp(prefix="workbench-doctor-", dir=sys.argv[1])
try:
    for d in ("lower", "upper", "work", "merged"):
        os.mkdir(os.path.join(top, d))
    opts = f"lowerdir={top}/lower,upperdir={top}/upper,workdir={top}/work,userxattr".encode()
    if libc.mount(b"overlay", f"{top}/merged".encode(), b"overlay", 0, opts) != 0:
        print("mount:", os.strerror(ctypes.get_errno())); sys.exit()
    try:
        with open(f"{top}/merged/f", "w") as f:
            f.write("x")
        print("ok" if os.path.exists(f"{top}/upper/f") else "write: the upper dir did not get the file")
    finally:
        libc.umount2(f"{top}/merged".encode(), 2)
finally:
    import shutil
    shutil.rmtree(top, ignore_errors=True)
"""


def _python() -> str:
    """A python3 another user can run: the one in PATH's usual places, else ours."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    return sys.executable


def as_user(argv: list[str], user: str | None) -> list[str]:
    """`argv` as `user` (through setpriv, from root), or as ourselves."""
    if user is None:
        return argv
    return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--init-groups", *argv]


def user_env(user: str | None) -> dict[str, str] | None:
    """The environment for a probe run as `user`: PATH, HOME and LANG alone (none of root's); ours when None."""
    if user is None:
        return None
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": pwd.getpwnam(user).pw_dir,
            "LANG": os.environ.get("LANG", "C.UTF-8")}


def check_overlay_userns(scratch: str, user: str | None = None) -> Finding:
    """A real probe: overlayfs with userxattr mounted in a new user namespace under `scratch`."""
    proc = subprocess.run(as_user([_python(), "-I", "-c", _PROBE, scratch], user), capture_output=True, text=True,
                          timeout=_PROBE_TIMEOUT, cwd="/", env=user_env(user))
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    out = lines[-1] if lines else f"the probe exited {proc.returncode} without a word"
    if out == "ok":
        return Finding("OK", "overlay-userns",
                       f"overlayfs mounts in a user namespace (userxattr; probe under {scratch})")
    if out.startswith("unshare:"):
        disabled = userns_disabled_message()
        fix = disabled.split("; an admin enables them: ", 1)[-1] if disabled else "see the userns check"
        return Finding("FAIL", "overlay-userns", f"cannot create a user namespace ({out[9:]}); fix: {fix}")
    return Finding("WARN", "overlay-userns",
                   f"overlayfs cannot be mounted in a user namespace here ({out}): builds use the copying snapshotter, "
                   f"{COPY_SLOWER} slower; fix: a kernel >= 5.11 (Debian 12's 6.1 has it) and a state root on a "
                   "filesystem overlayfs accepts (ext4, xfs, btrfs: not NFS or another overlay)")


# -- cgroups ------------------------------------------------------------------------------------------------

DELEGATE_FIX = ("sudo mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=cpu cpuset io "
                "memory pids\\n' | sudo tee /etc/systemd/system/user@.service.d/delegate.conf && sudo systemctl "
                "daemon-reload (then log in again)")


def _cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    text = _read(mountinfo) or ""
    for line in text.splitlines():
        fields = line.split()
        if " - cgroup2 " in line and len(fields) > 4:
            return fields[4]
    return None


def check_cgroup_delegation(uid: int, proc_cgroup: str = "/proc/self/cgroup",
                            mountinfo: str = "/proc/self/mountinfo") -> Finding:
    """Which cgroup v2 controllers `uid` may use in its own cgroup (runc rootless sets limits only there)."""
    mount = _cgroup2_mount(mountinfo)
    v1 = any(line.split(":")[0] != "0" for line in (_read(proc_cgroup) or "").splitlines())
    if mount is None:
        return Finding("WARN", "cgroups", "no cgroup v2 mounted: RUN steps get no resource limits and no cgroup of "
                                          "their own; fix: boot with systemd.unified_cgroup_hierarchy=1, then "
                                          + DELEGATE_FIX)
    where = "/"
    for line in (_read(proc_cgroup) or "").splitlines():
        if line.startswith("0::"):
            where = line[3:] or "/"
    if uid != os.getuid():  # another user's (doctor --user as root): systemd's cgroup of that user
        where = f"/user.slice/user-{uid}.slice/user@{uid}.service"
    path = os.path.join(mount, where.lstrip("/"))
    hybrid = " (hybrid: v1 controllers beside it)" if v1 else ""
    try:
        owner = os.stat(path).st_uid
    except OSError:
        owner = -1
    controllers = (_read(os.path.join(path, "cgroup.controllers")) or "").split()
    if owner != uid:
        return Finding("WARN", "cgroups",
                       f"cgroup v2 at {mount}{hybrid}: the cgroup {where} is not delegated to uid {uid} (controllers "
                       f"there: {' '.join(controllers) or 'none'}): RUN steps run without resource limits; fix: "
                       + DELEGATE_FIX)
    return Finding("OK", "cgroups", f"cgroup v2 {where} is delegated to uid {uid}; controllers: "
                                    f"{' '.join(controllers) or 'none'}")


def rootless_findings(name: str, uid: int, scratch: str, user: str | None = None) -> list[Finding]:
    """Every rootless check for the user `name` (probes run as `user` when given: doctor as root)."""
    return [check_userns(), check_subids(name, uid), check_idmap_helpers(), check_overlay_userns(scratch, user),
            check_cgroup_delegation(uid)]
