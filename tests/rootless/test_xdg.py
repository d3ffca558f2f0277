"""State, the server socket and the config file of an ordinary user live under the XDG base directories;
root keeps /var/lib/workbench and /etc/workbench; `--root`, $WORKBENCH_ROOT and $WORKBENCH_SERVER_SOCKET win."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.rootless.conftest import PYTHON, RootlessUser
from workbench import client, xdg
from workbench.request import default_root

_XDG = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "WORKBENCH_ROOT", "WORKBENCH_SERVER_SOCKET",
        "WORKBENCH_CONFIG")
_PLACES = ("import json; from workbench import client; from workbench.request import default_root; "
           "from workbench.cdi.config import config_path; "
           "print(json.dumps([str(default_root()), client.socket_path(), str(config_path())]))")


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in _XDG:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _places(user: RootlessUser, env: dict[str, str]) -> list[str]:
    proc = user.sh(" ".join(f"{k}={v}" for k, v in env.items()) + f' {PYTHON} -c "{_PLACES}"')
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def test_root_keeps_the_system_paths(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as root")
    clean_env.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    clean_env.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert default_root() == Path("/var/lib/workbench")
    assert xdg.config_dir() == "/etc/workbench"
    assert client.socket_path() == "/tmp/workbench-0/server.sock"
    (tmp_path / "run").mkdir()  # root's own: one it does not own (or that is absent) is ignored
    clean_env.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert client.socket_path() == f"{tmp_path}/run/workbench/server.sock"
    clean_env.setenv("WORKBENCH_SERVER_SOCKET", str(tmp_path / "s.sock"))
    assert client.socket_path() == str(tmp_path / "s.sock")
    clean_env.setenv("WORKBENCH_ROOT", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"


def test_user_places_follow_xdg(rootless_user: RootlessUser) -> None:
    base = rootless_user.mkdir("xdg")
    config = base / "config" / "workbench"
    config.mkdir(parents=True)
    rootless_user.write(config / "workbench.toml", "[cdi]\n")
    env = {"XDG_DATA_HOME": f"{base}/data", "XDG_CONFIG_HOME": f"{base}/config", "XDG_RUNTIME_DIR": f"{base}/run"}
    assert _places(rootless_user, env) == [f"{base}/data/workbench", f"{base}/run/workbench/server.sock",
                                           f"{config}/workbench.toml"]
    home = rootless_user.home
    system = "/etc/workbench/workbench.toml" if os.path.isfile("/etc/workbench/workbench.toml") else "None"
    assert _places(rootless_user, {}) == [f"{home}/.local/share/workbench",
                                          f"/tmp/workbench-{rootless_user.uid}/server.sock", system]
    wins = {**env, "WORKBENCH_ROOT": f"{base}/r", "WORKBENCH_SERVER_SOCKET": f"{base}/s.sock",
            "WORKBENCH_CONFIG": f"{base}/c.toml"}
    assert _places(rootless_user, wins) == [f"{base}/r", f"{base}/s.sock", f"{base}/c.toml"]


def test_user_server_status_names_the_xdg_socket(rootless_user: RootlessUser) -> None:
    base = rootless_user.mkdir("xdg-run")
    proc = rootless_user.run(["server", "status"], env={"XDG_RUNTIME_DIR": str(base)})
    assert f"no build server is running ({base}/workbench/server.sock)" in proc.stdout


def test_user_registry_config_from_xdg(rootless_user: RootlessUser) -> None:
    base = rootless_user.mkdir("xdg-config")
    (base / "workbench").mkdir()
    os.chown(base / "workbench", rootless_user.uid, rootless_user.gid)
    rootless_user.write(base / "workbench" / "workbench.toml", '[registry."example.test:5000"]\nhttp = true\n')
    probe = "from workbench.image.registry_config import uses_http; print(uses_http('example.test:5000'))"
    proc = rootless_user.sh(f'XDG_CONFIG_HOME={base} {PYTHON} -c "{probe}"')
    assert proc.stdout.strip() == "True", proc.stderr


def test_socket_dir_must_be_ours_and_private(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o700)
    assert client.safe_dir(str(ours)) and client.safe_dir(str(tmp_path / "absent"))
    ours.chmod(0o750)
    assert not client.safe_dir(str(ours))  # readable by the group: not private
    ours.chmod(0o700)
    (tmp_path / "link").symlink_to(ours)
    assert not client.safe_dir(str(tmp_path / "link"))  # a link put in /tmp by someone else
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 12345, 12345)
    assert not client.safe_dir(str(other)) or os.geteuid() == 12345
