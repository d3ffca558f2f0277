"""Fixtures for rootless tests: unprivileged users that run `python -m workbench.cli` as themselves.

`rootless_user` (session) ensures, as root, a user `wbtest` with subordinate ranges in /etc/subuid and
/etc/subgid; `nosub_user` a user `wbnosub` without any (its lines removed). Each is a `RootlessUser` whose `run`
starts workbench through `setpriv` with a clean environment. The project venv's python links into /root, which
other users cannot enter, so the system python3 (same minor version) runs with the repo and the venv's
site-packages on PYTHONPATH. Tests skip, saying why, when that cannot work here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = sysconfig.get_paths()["purelib"]
PYTHON = "/usr/bin/python3"
SUBID_FILES = ("/etc/subuid", "/etc/subgid")


@dataclass(frozen=True)
class RootlessUser:
    """An unprivileged user the tests run workbench as."""

    name: str
    uid: int
    gid: int
    home: Path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "PYTHONPATH": f"{REPO}:{SITE}", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
        return {**env, **(extra or {})}

    def command(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """`argv` run as this user (setpriv, its own groups, nothing inherited from root's environment)."""
        pairs = [f"{k}={v}" for k, v in self.env(env).items()]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "env", "-i", *pairs, *argv]

    def run(self, args: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`python -m workbench.cli ARGS` as this user; never raises on a non-zero exit."""
        return subprocess.run(self.command([PYTHON, "-m", "workbench.cli", *args], env), cwd=cwd or self.home,
                              capture_output=True, text=True, timeout=timeout)

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A shell script as this user (for checks such as `id` or `unshare`)."""
        return subprocess.run(self.command(["sh", "-c", script]), cwd=self.home, capture_output=True, text=True,
                              timeout=timeout)

    def mkdir(self, name: str) -> Path:
        """A fresh directory owned by this user under its home (pytest's tmp_path is root's, mode 0700)."""
        path = self.home / "t" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for p in (self.home / "t", path):
            os.chown(p, self.uid, self.gid)
        return path

    def write(self, path: Path, text: str) -> Path:
        """A file owned by this user."""
        path.write_text(text)
        os.chown(path, self.uid, self.gid)
        return path


def _set_subids(name: str, ranges: bool) -> None:
    """Give `name` the range 200000+65536*k (k from its uid) in /etc/subuid and /etc/subgid, or remove its lines."""
    uid = pwd.getpwnam(name).pw_uid
    for f in SUBID_FILES:
        lines = [ln for ln in Path(f).read_text().splitlines() if ln.split(":")[0] not in (name, str(uid))]
        if ranges:
            lines.append(f"{name}:{300000 + 65536 * (uid % 100)}:65536")
        Path(f).write_text("".join(ln + "\n" for ln in lines))


def _ensure_user(name: str, ranges: bool) -> RootlessUser:
    why = _unusable()
    if why:
        pytest.skip(why)
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    _set_subids(name, ranges)
    pw = pwd.getpwnam(name)
    user = RootlessUser(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    probe = user.sh(f"{PYTHON} -c 'import workbench.cli'")
    if probe.returncode != 0:
        pytest.skip(f"{name} cannot import workbench from {REPO} and {SITE} (both must be readable by others): "
                    f"{probe.stderr.strip().splitlines()[-1:]}")
    return user


def _unusable() -> str:
    if os.geteuid() != 0:
        return "rootless tests create users: needs root"
    for tool in ("setpriv", "useradd", "newuidmap", "newgidmap", "runc"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install util-linux passwd uidmap runc)"
    if not os.access(PYTHON, os.X_OK):
        return f"needs {PYTHON}"
    version = subprocess.run([PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        return f"{PYTHON} is {version}, the venv's packages are for {sys.version_info[:2]}"
    return ""


def _stop_server(user: RootlessUser) -> None:
    user.run(["server", "stop"], timeout=30)


@pytest.fixture(scope="session")
def rootless_user() -> Iterator[RootlessUser]:
    """`wbtest`, with subordinate ranges: builds run in a user namespace mapping 65536 ids."""
    user = _ensure_user("wbtest", ranges=True)
    yield user
    _stop_server(user)


@pytest.fixture(scope="session")
def nosub_user() -> Iterator[RootlessUser]:
    """`wbnosub`, with no subordinate ranges: builds fall back to a single-uid mapping."""
    user = _ensure_user("wbnosub", ranges=False)
    yield user
    _stop_server(user)
