"""`workbench doctor` reports the rootless set-up of an ordinary user, and the admin's commands to fix it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from tests.rootless.conftest import RootlessUser
from workbench.rootless import diagnose


def _lines(out: str) -> dict[str, str]:
    """check name → 'STATUS text'."""
    found = {}
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        name, _, text = rest.strip().partition(": ")
        found[name] = f"{status} {text}"
    return found


def test_doctor_as_a_user_with_everything(rootless_user: RootlessUser) -> None:
    base = rootless_user.mkdir("doctor")
    proc = rootless_user.run(["doctor"], env={"XDG_DATA_HOME": str(base)})
    lines = _lines(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines["root"].startswith(f"OK {base}/workbench does not exist yet")
    for name in ("userns", "subids", "newuidmap", "overlay-userns"):
        assert lines[name].startswith("OK "), lines
    assert lines["subids"].startswith("OK wbtest has subordinate ids (65536 uids from ")
    assert lines["cgroups"].split()[0] in ("OK", "WARN") and "overlayfs" not in lines  # no host-namespace mount
    assert "FAIL" not in proc.stdout


def test_doctor_as_a_user_without_subids(nosub_user: RootlessUser) -> None:
    first, last = diagnose.free_range()
    proc = nosub_user.run(["doctor"])
    lines = _lines(proc.stdout)
    assert lines["subids"] == (
        "WARN wbnosub has no subordinate ids in /etc/subuid and /etc/subgid: builds map your uid alone (files in "
        "images are owned by root, chown to other ids fails); fix: sudo usermod "
        f"--add-subuids {first}-{last} --add-subgids {first}-{last} wbnosub"), proc.stdout
    assert first >= 100000 and first % 65536 == 0


def test_doctor_without_newuidmap(rootless_user: RootlessUser) -> None:
    bin_dir = rootless_user.mkdir("fakebin")
    os.symlink(shutil.which("runc") or "/usr/sbin/runc", bin_dir / "runc")
    proc = rootless_user.run(["doctor"], env={"PATH": str(bin_dir)})
    lines = _lines(proc.stdout)
    assert lines["newuidmap"] == ("FAIL newuidmap is not installed; newgidmap is not installed: subordinate ids "
                                  "cannot be mapped; fix: sudo apt-get install uidmap"), proc.stdout
    assert proc.returncode == 1


def test_helpers_without_setuid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("newuidmap", "newgidmap"):
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"needs {tool}")
        shutil.copyfile(real, tmp_path / tool)  # neither the setuid bit nor file caps
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = diagnose.check_idmap_helpers()
    assert found.status == "FAIL"
    assert f"{tmp_path}/newuidmap is neither setuid root nor has the file capability it needs" in found.text
    assert found.text.endswith("fix: sudo chmod u+s $(command -v newuidmap newgidmap) (or sudo apt-get install "
                               "--reinstall uidmap)")


def test_doctor_as_root_points_at_other_users(tmp_path: Path, rootless_user: RootlessUser) -> None:
    proc = subprocess.run(WORKBENCH + ["doctor", "--root", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=120)
    assert _lines(proc.stdout)["rootless"] == ("OK you are root: builds do not use a user namespace; the rootless "
                                               "checks are for other users (workbench doctor --user NAME)")
    proc = subprocess.run(WORKBENCH + ["doctor", "--user", "wbtest"], capture_output=True, text=True, timeout=120)
    lines = _lines(proc.stdout)
    assert lines["subids"].startswith("OK wbtest has subordinate ids") and lines["overlay-userns"].startswith("OK ")
    assert "permissions" not in lines  # root's state root is not this user's
    proc = subprocess.run(WORKBENCH + ["doctor", "--user", "no-such-user-x"], capture_output=True, text=True,
                          timeout=120)
    assert "FAIL rootless: --user no-such-user-x: no such user" in proc.stdout and proc.returncode == 1


@pytest.mark.parametrize(("files", "expect"), [
    ({}, None),
    ({"kernel/unprivileged_userns_clone": "0", "user/max_user_namespaces": "15000"},
     "rootless: user namespaces are disabled on this host: kernel.unprivileged_userns_clone = 0 (Debian's kernels "
     "before 11 (bullseye) and some hardened ones default to 0); an admin enables them: sudo sysctl -w "
     "kernel.unprivileged_userns_clone=1 && printf 'kernel.unprivileged_userns_clone=1\\n' | sudo tee "
     "/etc/sysctl.d/50-workbench-userns.conf"),
    ({"user/max_user_namespaces": "0", "kernel/apparmor_restrict_unprivileged_userns": "1"},
     "rootless: user namespaces are disabled on this host: user.max_user_namespaces = 0 (RHEL/CentOS 7 default to "
     "0), kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10 and later let only programs with an "
     "AppArmor profile allowing `userns` create them); an admin enables them: sudo sysctl -w "
     "user.max_user_namespaces=28633 kernel.apparmor_restrict_unprivileged_userns=0 && printf "
     "'user.max_user_namespaces=28633\\nkernel.apparmor_restrict_unprivileged_userns=0\\n' | sudo tee "
     "/etc/sysctl.d/50-workbench-userns.conf"),
])
def test_userns_disabled_is_one_line(tmp_path: Path, files: dict[str, str], expect: str | None) -> None:
    for name, value in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(value + "\n")
    assert diagnose.userns_disabled_message(str(tmp_path)) == expect


def test_cgroup_delegation_read_from_the_files(tmp_path: Path) -> None:
    mount = tmp_path / "cg"
    mine = mount / "user.slice" / "me"
    mine.mkdir(parents=True)
    (mine / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup").write_text("4:memory:/\n0::/user.slice/me\n")
    (tmp_path / "mountinfo").write_text(f"30 25 0:26 / {mount} rw - cgroup2 cgroup2 rw\n")
    found = diagnose.check_cgroup_delegation(os.getuid(), str(tmp_path / "cgroup"), str(tmp_path / "mountinfo"))
    assert found == ("OK", "cgroups", f"cgroup v2 /user.slice/me is delegated to uid {os.getuid()}; controllers: "
                                      "cpu memory pids")
    found = diagnose.check_cgroup_delegation(os.getuid() + 1, str(tmp_path / "cgroup"), str(tmp_path / "mountinfo"))
    assert found.status == "WARN" and "(hybrid: v1 controllers beside it)" in found.text
    assert "Delegate=cpu cpuset io memory pids" in found.text


def test_a_probe_as_another_user_gets_none_of_roots_environment(tmp_path: Path, rootless_user: RootlessUser,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`doctor --user NAME` runs its probe as NAME with PATH, HOME and LANG alone."""
    monkeypatch.setenv("WB_ROOT_ONLY", "root's")
    monkeypatch.setattr(diagnose, "_PROBE", "import os; print(' '.join([*sorted(os.environ), os.environ['HOME']]))")
    finding = diagnose.check_overlay_userns(str(tmp_path), "wbtest")
    seen = finding.text.split("here (", 1)[1].split(")", 1)[0].split()
    # LC_CTYPE may be added by Python itself (its C-locale coercion), never by root's environment
    assert [n for n in seen if n != "LC_CTYPE"] == ["HOME", "LANG", "PATH", str(rootless_user.home)], finding
