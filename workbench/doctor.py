"""`workbench doctor [--root DIR] [--fix] [--user NAME]`: is this build root healthy, and if not, how to fix it.

One line per check -- `OK`, `WARN` or `FAIL`, what was found and the fix: the root's permissions, the
cache index's integrity, orphans (snapshot dirs without a record and the rest `workbench.gc` calls
orphans), stale mounts, leftover runc containers of dead builds, the runc version and kernel overlayfs
support, and the rootless set-up of an ordinary user (subordinate ids, newuidmap, user namespaces, overlayfs
in one, cgroup v2 delegation; as root, of `--user NAME`). Exit 0 when nothing FAILs. `--fix` repairs what is
safe: modes, a corrupt index (moved aside), orphans with their mounts and dead containers (as `workbench prune`
removes them, keeping every record).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.state_root import make_private, state_entries

MIN_RUNC = (1, 2, 5)
_SHOWN = 3  # offenders named per line
_WALK_LIMIT = 50_000  # entries looked at for loose modes (a huge root is sampled, not walked to the end)


@dataclass
class Check:
    """One check's verdict."""

    status: str  # OK | WARN | FAIL
    name: str
    text: str
    fix: Callable[[], None] | None = None

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.text}"


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(os.lstat(path).st_mode):04o}"


# -- permissions --------------------------------------------------------------------------------------------


def check_permissions(root: Path) -> Check:
    st = os.lstat(root)
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(root)
    if st.st_uid != me:
        return Check("FAIL", "permissions", f"{root} belongs to uid {st.st_uid}, not to you (uid {me}): use a "
                                            "root of your own (--root DIR) or chown it")
    loose_root = stat.S_IMODE(st.st_mode) & 0o077
    loose = [p for p in state_entries(root, _WALK_LIMIT) if stat.S_IMODE(os.lstat(p).st_mode) & 0o066]

    def fix() -> None:
        make_private([root, *loose])

    shown = ", ".join(f"{p.relative_to(root)} ({_mode(p)})" for p in loose[:_SHOWN])
    more = f" and {len(loose) - _SHOWN} more" if len(loose) > _SHOWN else ""
    if loose_root:
        return Check("FAIL", "permissions",
                     f"{root} is mode {stat.S_IMODE(st.st_mode):04o}: other users can read it (and run files from "
                     f"snapshots, see step secrets); fix: chmod 700 {root} (or workbench doctor --fix)", fix)
    top = [p for p in loose if len(p.relative_to(root).parts) == 1]
    if top:
        return Check("FAIL", "permissions",
                     f"open to other users below {root}: {shown}{more}; fix: chmod go-rwx on them "
                     "(or workbench doctor --fix)", fix)
    if loose:
        return Check("WARN", "permissions",
                     f"{root} is 0700 but entries below it are readable or writable by others: {shown}{more}; "
                     "fix: chmod go-rwx on them (or workbench doctor --fix)", fix)
    return Check("OK", "permissions", f"{root} is 0700 and yours; nothing below it is open to others")


# -- the cache index ----------------------------------------------------------------------------------------


def check_database(root: Path) -> Check:
    import sqlite3

    from workbench.cache.store import integrity_problem, quarantine

    db = root / "cache.db"
    if not db.exists():
        return Check("OK", "database", "no cache index yet (the first build creates it)")
    try:
        problem = integrity_problem(db)
    except (OSError, sqlite3.Error) as e:
        return Check("FAIL", "database", f"{db} cannot be read ({e}); fix: check its owner and mode, and the "
                                         "disk")
    if problem is None:
        return Check("OK", "database", f"{db}: quick_check ok")

    def fix() -> None:
        quarantine(db)

    return Check("FAIL", "database",
                 f"{db} is corrupt ({problem}); fix: workbench doctor --fix (or the next build) moves it aside "
                 "and starts an empty index", fix)


# -- orphans, mounts, containers ----------------------------------------------------------------------------


def scan(root: Path) -> object | None:
    """`du` of the root, None while its index is corrupt (reading the cache would repair the index on the
    way: that is for --fix or the next build to do, with its warning)."""
    from workbench.cache.store import integrity_problem
    from workbench.gc import du

    if (root / "cache.db").exists() and integrity_problem(root / "cache.db") is not None:
        return None
    return du(root)


_UNCHECKED = "not checked: the cache index is corrupt (see database)"


def check_orphans(root: Path, usage: object) -> Check:
    from workbench.gc import Usage, human_size

    if usage is None:
        return Check("WARN", "orphans", _UNCHECKED)
    assert isinstance(usage, Usage)
    o = usage.orphans
    parts = [(len(o.snapshots), "snapshot dirs without a record"), (len(o.scratch), "stale temp files"),
             (len(o.blobs), "unreferenced blobs"), (len(o.records), "records with missing snapshots")]
    found = [f"{n} {what}" for n, what in parts if n]
    if not found:
        return Check("OK", "orphans", "every snapshot, blob and temp dir belongs to a record or a running build")
    named = f" ({', '.join(o.snapshots[:_SHOWN])}{', …' if len(o.snapshots) > _SHOWN else ''})" \
        if o.snapshots else ""
    return Check("WARN", "orphans", f"{', '.join(found)}{named}, {human_size(o.size)}; fix: workbench prune "
                                    "(or workbench doctor --fix)", lambda: _remove_orphans(root))


def check_mounts(root: Path, usage: object) -> Check:
    from workbench.gc import Usage, stale_mounts

    if usage is None:
        stale = stale_mounts(root)
    else:
        assert isinstance(usage, Usage)
        stale = usage.orphans.mounts
    if not stale:
        return Check("OK", "mounts", "no stale mounts under the root")
    shown = ", ".join(str(m) for m in stale[:_SHOWN]) + (", …" if len(stale) > _SHOWN else "")
    return Check("WARN", "mounts", f"{len(stale)} stale mounts of dead builds: {shown}; fix: workbench prune "
                                   "(or workbench doctor --fix)", lambda: _remove_orphans(root))


def _remove_orphans(root: Path) -> None:
    from workbench.gc import remove_orphans

    if remove_orphans(root).skipped:
        raise OSError("builds are running: try again when they are done")


def dead_containers(root: Path) -> list[tuple[Path, str]]:
    """(runc state dir, container id) of the containers left by builds whose process is gone."""
    from workbench.snapshot.scratch import stale_entry

    runc = shutil.which("runc")
    found: list[tuple[Path, str]] = []
    for state in sorted((root / "tmp").glob("*/runc")):
        if not stale_entry(state.parent):
            continue
        ids: list[str] = []
        if runc is not None:
            proc = subprocess.run([runc, "--root", str(state), "list", "--format", "json"], capture_output=True,
                                  text=True, timeout=30)
            try:
                ids = [str(c["id"]) for c in json.loads(proc.stdout or "null") or []]
            except (ValueError, KeyError, TypeError):
                ids = []
        ids = ids or [p.name for p in state.iterdir() if p.is_dir()]
        found += [(state, i) for i in ids]
    return found


def check_containers(root: Path) -> Check:
    dead = dead_containers(root)
    if not dead:
        return Check("OK", "containers", "no runc containers left by dead builds")

    def fix() -> None:
        from workbench.snapshot.scratch import remove_scratch

        for state in dict.fromkeys(s for s, _ in dead):
            remove_scratch(state.parent)

    shown = ", ".join(f"{i} ({s.parent.name})" for s, i in dead[:_SHOWN]) + (", …" if len(dead) > _SHOWN else "")
    return Check("WARN", "containers", f"{len(dead)} runc containers of dead builds: {shown}; fix: workbench prune "
                                       "(or workbench doctor --fix)", fix)


# -- the host -----------------------------------------------------------------------------------------------


def runc_verdict(version_text: str) -> tuple[str, str]:
    """(status, text) for `runc --version` output."""
    first = version_text.splitlines()[0] if version_text else ""
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", first)
    if not m:
        return "WARN", f"cannot read the runc version ({first or 'no output'}); runc >= 1.2.5 is expected"
    version = tuple(int(x) for x in m.groups())
    full = first.split("version", 1)[-1].strip()
    commit = re.search(r"commit:\s*(\S+)", version_text)
    build = commit[1] if commit else full
    if version >= MIN_RUNC:
        return "OK", f"runc {full}"
    deb = re.search(r"\+deb(\d+)u(\d+)", build)
    if deb and int(deb[1]) >= 12 and int(deb[2]) >= 1:
        return "WARN", (f"runc {full} is older than 1.2.5; Debian's build {build} is patched for CVE-2024-21626 "
                        "(container escape through a leaked fd); upgrade runc for the fixes since")
    if version < (1, 1, 12):
        return "FAIL", (f"runc {full} is vulnerable to CVE-2024-21626 (container escape, fixed in 1.1.12); "
                        "fix: install runc >= 1.2.5")
    return "WARN", f"runc {full} is older than 1.2.5; fix: install runc >= 1.2.5"


def check_runc() -> Check:
    runc = shutil.which("runc")
    if runc is None:
        return Check("FAIL", "runc", "runc is not on PATH: RUN steps cannot run; fix: install runc >= 1.2.5")
    try:
        proc = subprocess.run([runc, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        return Check("FAIL", "runc", f"{runc} cannot be run ({e.strerror}); fix: reinstall runc")
    status, text = runc_verdict(proc.stdout)
    return Check(status, "runc", text)


def check_overlay(root: Path) -> Check:
    from workbench.snapshot.overlay import mount_overlay, unmount

    try:
        with open("/proc/filesystems") as f:
            listed = any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        listed = False
    base = root / "tmp" if root.is_dir() else Path("/tmp")
    test = base / f"{os.getpid()}-doctor-{secrets.token_hex(3)}"  # a dead doctor's dir is stale scratch
    try:
        os.makedirs(base, 0o700, exist_ok=True)
        os.mkdir(test, 0o700)
        for d in ("lower", "upper", "work", "merged"):
            (test / d).mkdir()
        (test / "lower" / "f").write_text("lower\n")
        mount_overlay([test / "lower"], test / "upper", test / "work", test / "merged")
        try:
            (test / "merged" / "f").write_text("upper\n")
            ok = (test / "upper" / "f").read_text() == "upper\n" and (test / "lower" / "f").read_text() == "lower\n"
        finally:
            unmount(test / "merged")
    except Exception as e:  # noqa: BLE001 - any failure of the test mount is the finding
        hint = "" if listed else " (overlay is not in /proc/filesystems: modprobe overlay)"
        return Check("FAIL", "overlayfs", f"a test overlay mount under {base} failed: {e}{hint}; fix: a kernel with "
                                          "overlayfs, run as root, and a root on a filesystem overlayfs accepts as "
                                          "upper dir (not NFS or another overlay)")
    finally:
        shutil.rmtree(test, ignore_errors=True)
    if not ok:
        return Check("FAIL", "overlayfs", f"a test overlay mount under {base} did not write to its upper dir")
    return Check("OK", "overlayfs", f"the kernel mounts overlayfs (test mount under {base} worked)")


# -- rootless -----------------------------------------------------------------------------------------------


def rootless_checks(root: Path, user: str | None = None) -> list[Callable[[], Check]]:
    """The rootless set-up of this user (or, as root, of `user`): `workbench.rootless.diagnose`'s findings."""
    import pwd

    from workbench.rootless import diagnose

    if os.geteuid() == 0 and user is None:
        return [lambda: Check("OK", "rootless", "you are root: builds do not use a user namespace; the rootless "
                                                "checks are for other users (workbench doctor --user NAME)")]
    try:
        pw = pwd.getpwnam(user) if user is not None else pwd.getpwuid(os.getuid())
    except KeyError:
        return [lambda: Check("FAIL", "rootless", f"--user {user}: no such user")]
    probe_as = user if os.geteuid() == 0 else None
    scratch = str(root / "tmp") if probe_as is None and (root / "tmp").is_dir() else "/tmp"

    def wrap(find: Callable[[], diagnose.Finding]) -> Callable[[], Check]:
        return lambda: Check(*find())

    return [wrap(diagnose.check_userns), wrap(lambda: diagnose.check_subids(pw.pw_name, pw.pw_uid)),
            wrap(diagnose.check_idmap_helpers), wrap(lambda: diagnose.check_overlay_userns(scratch, probe_as)),
            wrap(lambda: diagnose.check_cgroup_delegation(pw.pw_uid))]


# -- all ----------------------------------------------------------------------------------------------------


def checks(root: Path, user: str | None = None) -> list[Callable[[], Check]]:
    """The checks, in order; a root that does not exist gets the host checks only. As root with `user`, the
    root's checks are skipped: only the host's and that user's rootless set-up."""
    if os.geteuid() == 0 and user is not None:
        return [check_runc, *rootless_checks(root, user)]
    # an ordinary user's overlay mounts are made in its user namespace: the rootless checks probe that one
    host = [check_runc, *([lambda: check_overlay(root)] if os.geteuid() == 0 else []), *rootless_checks(root, user)]
    if not root.exists():
        return [lambda: Check("OK", "root", f"{root} does not exist yet (the first build creates it 0700)"), *host]
    return [lambda: check_permissions(root), lambda: check_database(root), lambda: check_orphans(root, scan(root)),
            lambda: check_mounts(root, scan(root)), lambda: check_containers(root), *host]


def run(root: Path, fix: bool = False, user: str | None = None) -> tuple[list[str], int]:
    """The report lines and the exit code (1 if anything FAILs, after fixing when `fix`)."""
    import sqlite3

    lines: list[str] = []
    failed = False
    for make in checks(root, user):
        try:
            result = make()
            if fix and result.status != "OK" and result.fix is not None:
                try:
                    result.fix()
                except OSError as e:
                    result.text += f" (--fix failed: {e})"
                else:
                    result = make()
                    result.text += " (fixed)" if result.status == "OK" else ""
        except (OSError, sqlite3.Error, subprocess.SubprocessError) as e:
            result = Check("FAIL", "check", f"a check could not run: {e}")
        lines.append(result.line())
        failed = failed or result.status == "FAIL"
    return lines, 1 if failed else 0


def main(root: Path, fix: bool = False, user: str | None = None) -> int:
    """`workbench doctor`: print the report, return the exit code."""
    lines, code = run(Path(os.path.abspath(root)), fix, user)
    print("\n".join(lines), flush=True)
    return code
