"""The state root is its owner's alone: other local users can neither run, read nor list what is under it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, real_parts_missing, wb

NOBODY = pwd.getpwnam("nobody")


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python `code` as the unprivileged user `nobody`."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)

    # the system's Python: the venv's lives under /root, which nobody cannot enter
    return subprocess.run(["/usr/bin/python3", "-I", "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=drop, cwd="/")


@pytest.fixture(scope="module")
def open_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp dirs are 0700: they would hide the root's own mode)."""
    path = Path(tempfile.mkdtemp(prefix="wb-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def built_root(open_dir: Path, registry: str) -> Path:
    """A root after a build that leaves a set-uid root binary and a device node in its snapshots."""
    tmp = open_dir
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM localhost:5055/busybox\n"
        "RUN cp /bin/busybox /euid && chmod 4755 /euid && mknod /disk b 7 0 && chmod 666 /disk\n")
    root = tmp / "root"
    wb(str(ctx), root=root)
    return root


def test_a_new_root_and_its_state_are_private(built_root: Path) -> None:
    assert built_root.stat().st_mode & 0o777 == 0o700
    for entry in built_root.iterdir():
        assert entry.lstat().st_mode & 0o077 == 0, f"{entry} is open to others: {entry.lstat().st_mode:o}"
    # The set-uid binary exists (root sees it) ...
    found = list(built_root.glob("snapshots/*/fs/euid"))
    assert found and found[0].stat().st_mode & 0o4000


def test_another_user_cannot_reach_snapshots_db_or_devices(built_root: Path) -> None:
    euid = next(built_root.glob("snapshots/*/fs/euid"))
    disk = next(built_root.glob("snapshots/*/fs/disk"))
    code = (
        "import os, sys\n"
        "errors = []\n"
        f"for p in [{str(built_root)!r}, {str(built_root / 'snapshots')!r}]:\n"
        "    try: os.listdir(p); errors.append('listed ' + p)\n"
        "    except PermissionError: pass\n"
        f"for p in [{str(built_root / 'cache.db')!r}, {str(disk)!r}]:\n"
        "    try: open(p, 'rb').close(); errors.append('opened ' + p)\n"
        "    except PermissionError: pass\n"
        f"try: os.execv({str(euid)!r}, ['id', '-u'])\n"
        "except PermissionError: pass\n"
        "print(errors or 'denied')\n")
    proc = as_nobody(code)
    assert proc.stdout.strip() == "denied", proc.stdout + proc.stderr


def test_an_open_root_is_made_private_on_first_use_with_a_notice(tmp_path: Path, registry: str) -> None:
    root = tmp_path / "root"
    (root / "snapshots" / "abc" / "fs" / "bin").mkdir(parents=True)
    (root / "history" / "rec").mkdir(parents=True)
    (root / "history" / "rec" / "meta.json").write_text("{}")
    (root / "cache.db").write_bytes(b"")
    for path, mode in ((root, 0o755), (root / "snapshots", 0o755), (root / "cache.db", 0o644),
                       (root / "history" / "rec", 0o755), (root / "history" / "rec" / "meta.json", 0o644),
                       (root / "snapshots" / "abc" / "fs" / "bin", 0o755)):
        path.chmod(mode)
    proc = subprocess.run(WORKBENCH + ["du", "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    notices = [ln for ln in proc.stderr.splitlines() if "open to other users" in ln]
    assert len(notices) == 1 and "0755" in notices[0] and "0700" in notices[0], proc.stderr
    assert root.stat().st_mode & 0o777 == 0o700
    assert (root / "snapshots").stat().st_mode & 0o777 == 0o700
    assert (root / "cache.db").stat().st_mode & 0o777 == 0o600
    # the state below was made private once too, while what a layer holds keeps the image's modes
    assert (root / "history" / "rec").stat().st_mode & 0o777 == 0o700
    assert (root / "history" / "rec" / "meta.json").stat().st_mode & 0o777 == 0o600
    assert (root / "snapshots" / "abc" / "fs" / "bin").stat().st_mode & 0o777 == 0o755
    doctor = subprocess.run(WORKBENCH + ["doctor", "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert "OK   permissions" in doctor.stdout, doctor.stdout
    again = subprocess.run(WORKBENCH + ["du", "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert "open to other users" not in again.stderr  # said once, when it was fixed


def test_a_root_of_another_user_is_refused(tmp_path: Path) -> None:
    if real_parts_missing():
        pytest.skip(real_parts_missing())
    root = tmp_path / "theirs"
    root.mkdir(mode=0o700)
    os.chown(root, NOBODY.pw_uid, NOBODY.pw_gid)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    proc = wb(str(ctx), root=root, check=False)
    assert proc.returncode != 0
    assert f"belongs to uid {NOBODY.pw_uid}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert os.listdir(root) == []  # nothing was written into it


def test_the_step_config_with_secret_env_is_private_while_it_runs(open_dir: Path, registry: str) -> None:
    """A secret passed as env sits in the running step's runc config: only its owner may read that file."""
    tmp_path = open_dir / "secret"
    tmp_path.mkdir()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM localhost:5055/busybox\n"
        "RUN --mount=type=secret,id=tok,env=TOKEN sleep 4\n")
    secret_value = "s3cr3t-" + os.urandom(6).hex()
    root = tmp_path / "root"
    env = dict(os.environ, TOK=secret_value)
    proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", "--secret",
                                         "id=tok,env=TOK", str(ctx)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        configs: list[Path] = []
        for _ in range(200):
            configs = list(root.glob("tmp/*/bundle-*/config.json"))
            if configs:
                break
            subprocess.run(["sleep", "0.05"])
        assert configs, "the step never started"
        assert secret_value in configs[0].read_text()  # the config really is where the value is
        assert configs[0].stat().st_mode & 0o077 == 0 and configs[0].parent.stat().st_mode & 0o077 == 0
        # What another user can see while it runs: nothing under the root, no process's command line.
        scan = as_nobody(  # the value is spelled in hex: the scanner's own command line must not hold it
            "import os\n"
            f"needle = bytes.fromhex({secret_value.encode().hex()!r})\n"
            "hits = []\n"
            f"for top in [{str(root)!r}]:\n"
            "    for d, _, files in os.walk(top):\n"
            "        for f in files:\n"
            "            try: data = open(os.path.join(d, f), 'rb').read()\n"
            "            except OSError: continue\n"
            "            if needle in data: hits.append(os.path.join(d, f))\n"
            "for pid in os.listdir('/proc'):\n"
            "    for name in ('cmdline', 'environ'):\n"
            "        try: data = open(f'/proc/{pid}/{name}', 'rb').read()\n"
            "        except OSError: continue\n"
            "        if needle in data: hits.append(f'/proc/{pid}/{name}')\n"
            "print(hits)\n")
        assert scan.stdout.strip() == "[]", scan.stdout + scan.stderr
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # After the build the value is nowhere under the root: not in layers, the cache index or the history.
    leaked = subprocess.run(["grep", "-rlaF", secret_value, str(root)], capture_output=True, text=True)
    assert leaked.stdout == "", leaked.stdout


def test_a_root_reached_through_another_users_link_is_refused(open_dir: Path) -> None:
    """`/tmp/wbroot -> /etc`, planted by another user: workbench must not make /etc's files private."""
    victim = open_dir / "victim"
    victim.mkdir()
    (victim / "passwd").write_text("x\n")
    victim.chmod(0o755)
    (victim / "passwd").chmod(0o644)
    link = open_dir / "wbroot"
    link.symlink_to(victim)
    os.lchown(link, NOBODY.pw_uid, NOBODY.pw_gid)
    proc = subprocess.run(WORKBENCH + ["du", "--root", str(link)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "symbolic link owned by uid" in proc.stderr, proc.stderr
    assert victim.stat().st_mode & 0o777 == 0o755 and (victim / "passwd").stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(victim)) == ["passwd"]


def test_an_open_folder_that_is_not_a_root_is_not_taken_over(tmp_path: Path) -> None:
    """`--root ~` (or any folder of other things open to others) is refused, not chmod-ed."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine\n")
    home.chmod(0o755)
    proc = subprocess.run(WORKBENCH + ["du", "--root", str(home)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "did not make" in proc.stderr, proc.stderr
    assert home.stat().st_mode & 0o777 == 0o755 and sorted(os.listdir(home)) == ["notes.txt"]


@pytest.mark.parametrize("planted", ["link", "foreign-dir"])
def test_entries_planted_in_a_once_open_root_are_refused(tmp_path: Path, planted: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o1777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "link":
        (root / "snapshots").symlink_to(elsewhere)
        os.lchown(root / "snapshots", NOBODY.pw_uid, NOBODY.pw_gid)
    else:
        (root / "history").mkdir()
        os.chown(root / "history", NOBODY.pw_uid, NOBODY.pw_gid)
    proc = subprocess.run(WORKBENCH + ["du", "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "someone else may have put it there" in proc.stderr, proc.stderr
    assert os.listdir(elsewhere) == []


def test_private_dirs_are_private_down_from_the_first_missing_parent(tmp_path: Path) -> None:
    # `mkdir(parents=True)` makes the parents with the umask's mode: ROOT/http was 0755 after an ADD <url>
    from workbench.state_root import make_private_dir

    old = os.umask(0o022)
    try:
        make_private_dir(tmp_path / "http" / "urls" / "x")
    finally:
        os.umask(old)
    for p in (tmp_path / "http", tmp_path / "http" / "urls", tmp_path / "http" / "urls" / "x"):
        assert p.stat().st_mode & 0o777 == 0o700, p
