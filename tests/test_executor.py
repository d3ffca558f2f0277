"""RUN steps in real containers (the system runc on a busybox rootfs), plus the spec/user/resolv.conf parts."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from workbench.executor.runc import ExecError, ExecResult, hosts_file, resolv_conf, run
from workbench.executor.spec import DEFAULT_PATH, ExecSpec, Mount, generate_spec, nofile_limit
from workbench.executor.user import UserError, resolve_user


def _why_no_runc() -> str:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("runc") is None:
        return "needs runc (apt-get install runc)"
    if not os.path.exists("/bin/busybox"):
        return "needs /bin/busybox (apt-get install busybox-static)"
    return ""


needs_runc = pytest.mark.skipif(bool(_why_no_runc()), reason=_why_no_runc() or "-")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nu:x:1000:1000::/home/u:/bin/sh\n"
GROUP = "root:x:0:\nnogroup:x:65534:\nu:x:1000:\nextra:x:2000:u\n"


def _busybox_root(root: Path, with_etc: bool = True, system_dirs: bool = True) -> Path:
    (root / "bin").mkdir(parents=True)
    for d in ("tmp", "proc", "sys", "dev") if system_dirs else ("tmp",):
        (root / d).mkdir()
    os.chmod(root / "tmp", 0o1777)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    if with_etc:
        (root / "etc").mkdir()
        (root / "etc" / "passwd").write_text(PASSWD)
        (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _why_no_runc():
        pytest.skip(_why_no_runc())
    return _busybox_root(tmp_path_factory.mktemp("rootfs") / "r")


def _run(rootfs: Path, tmp_path: Path, args: list[str], **kw: Any) -> tuple[int, bytes, bytes]:
    out: dict[int, bytes] = {1: b"", 2: b""}

    def on_output(fd: int, data: bytes) -> None:
        out[fd] += data

    stdin = kw.pop("stdin", None)
    result = run(rootfs, ExecSpec(args=args, env=kw.pop("env", []), **kw), tmp_path, on_output=on_output, stdin=stdin)
    return result.exit_code, out[1], out[2]


# --- no runc needed ------------------------------------------------------------------------------------------


def test_generate_spec_defaults(tmp_path: Path) -> None:
    spec = ExecSpec(args=["true"], env=["A=1"], cwd="work", mounts=[Mount("tmpfs", "tmpfs", "/cache", ["nosuid"])])
    cfg = generate_spec(spec, tmp_path, tmp_path / "resolv.conf", tmp_path / "hosts", 1000, 1000, [1000, 2000])
    proc = cfg["process"]
    assert proc["env"] == [DEFAULT_PATH, "A=1"] and proc["cwd"] == "/work" and not proc["terminal"]
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 2000]}
    assert len(proc["capabilities"]["bounding"]) == 14 and "CAP_SYS_ADMIN" not in proc["capabilities"]["effective"]
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": nofile_limit(), "soft": nofile_limit()}]
    assert [n["type"] for n in cfg["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount"]  # host network
    dests = [m["destination"] for m in cfg["mounts"]]
    assert dests == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
                     "/etc/resolv.conf", "/etc/hosts", "/cache"]
    assert "ro" in cfg["mounts"][dests.index("/etc/hosts")]["options"]
    assert cfg["hostname"] == "buildkitsandbox" and cfg["root"] == {"path": str(tmp_path), "readonly": False}
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"] and "/proc/sys" in cfg["linux"]["readonlyPaths"]
    other = generate_spec(ExecSpec(args=["true"], env=["PATH=/x"], network="none"), tmp_path, tmp_path, tmp_path,
                          0, 0, [])
    assert other["process"]["env"] == ["PATH=/x"] and {"type": "network"} in other["linux"]["namespaces"]
    assert other["linux"]["cgroupsPath"] != cfg["linux"]["cgroupsPath"]
    with pytest.raises(ValueError, match="network"):
        generate_spec(ExecSpec(args=["true"], env=[], network="bridge"), tmp_path, tmp_path, tmp_path, 0, 0, [])


def test_resolve_user_from_rootfs_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    assert resolve_user(tmp_path, "") == (0, 0, [0])
    assert resolve_user(tmp_path, "u") == (1000, 1000, [1000, 2000])
    assert resolve_user(tmp_path, "1000") == (1000, 1000, [1000, 2000])  # numeric uid found in passwd
    assert resolve_user(tmp_path, "4242") == (4242, 0, [0])  # numeric uid not in passwd: gid 0
    assert resolve_user(tmp_path, "1000:1000") == (1000, 1000, [1000])
    assert resolve_user(tmp_path, "u:nogroup") == (1000, 65534, [65534])
    with pytest.raises(UserError, match="unable to find user ghost: no matching entries in passwd file"):
        resolve_user(tmp_path, "ghost")
    with pytest.raises(UserError, match="unable to find group nope"):
        resolve_user(tmp_path, "u:nope")


def test_resolv_conf_and_hosts(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("search example.org\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\n")
    assert resolv_conf("host", host) == host.read_text()
    assert resolv_conf("none", host) == "search example.org\nnameserver 10.0.0.2\n"
    assert resolv_conf("none", tmp_path / "missing") == ""
    assert hosts_file() == "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def test_missing_runc_is_an_exec_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExecError, match="runc"):
        run(tmp_path, ExecSpec(args=["true"], env=[]), tmp_path)


# --- the real runc --------------------------------------------------------------------------------------------


@pytest.mark.real
@needs_runc
def test_streams_and_exit_code(rootfs: Path, tmp_path: Path) -> None:
    code, out, err = _run(rootfs, tmp_path, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, b"out\n", b"err\n")
    assert _run(rootfs, tmp_path, ["cat"], stdin=b"fed\n")[:2] == (0, b"fed\n")
    assert os.listdir(tmp_path) == ["runc"] and os.listdir(tmp_path / "runc") == []  # bundle and state gone


@pytest.mark.real
@needs_runc
def test_env_cwd_and_user(rootfs: Path, tmp_path: Path) -> None:
    script = "echo $A; echo $PATH; pwd; id -u; id -g; id -G"
    code, out, _ = _run(rootfs, tmp_path, ["/bin/sh", "-c", script], env=["A=1"], cwd="/made/here", user="u")
    assert code == 0
    assert out.decode().splitlines() == ["1", DEFAULT_PATH[5:], "/made/here", "1000", "1000", "1000 2000"]
    assert (rootfs / "made" / "here").stat().st_uid == 1000 and (rootfs / "made").stat().st_uid == 1000
    assert _run(rootfs, tmp_path, ["id"], user="nobody")[1].startswith(b"uid=65534(nobody) gid=65534(nogroup)")
    assert _run(rootfs, tmp_path, ["id", "-G"], user="1000:1000")[1] == b"1000\n"
    with pytest.raises(ExecError, match="^unable to find user ghost: no matching entries in passwd file$"):
        _run(rootfs, tmp_path, ["true"], user="ghost")


@pytest.mark.real
@needs_runc
def test_network_hosts_and_readonly_sys(rootfs: Path, tmp_path: Path) -> None:
    def ifaces(out: bytes) -> set[str]:
        return {ln.split(":")[0].strip() for ln in out.decode().splitlines() if ":" in ln and "|" not in ln}

    code, out, _ = _run(rootfs, tmp_path, ["cat", "/proc/net/dev"], network="none")
    assert code == 0 and ifaces(out) == {"lo"}
    host_ifaces = ifaces(Path("/proc/net/dev").read_bytes())
    code, out, _ = _run(rootfs, tmp_path, ["cat", "/proc/net/dev"])
    assert code == 0 and ifaces(out) == host_ifaces
    code, out, _ = _run(rootfs, tmp_path, ["/bin/sh", "-c", "cat /etc/hosts; hostname; ulimit -n"])
    assert out.decode() == hosts_file() + f"buildkitsandbox\n{nofile_limit()}\n"
    assert out.startswith(b"127.0.0.1\tlocalhost buildkitsandbox\n")
    assert not (rootfs / "etc" / "hosts").exists() and not (rootfs / "etc" / "resolv.conf").exists()
    code, _, err = _run(rootfs, tmp_path, ["touch", "/sys/x"])
    assert code != 0 and b"Read-only" in err
    code, _, err = _run(rootfs, tmp_path, ["/bin/sh", "-c", "echo > /etc/hosts"])
    assert code != 0 and b"Read-only" in err
    # Devices: the standard nodes work, host block devices made with mknod do not open.
    assert _run(rootfs, tmp_path, ["/bin/sh", "-c", "echo x > /dev/null && head -c1 /dev/zero | wc -c"])[:2] == (
        0, b"1\n")
    mknod = "mknod /tmp/blk b 7 0 && head -c1 /tmp/blk; rm -f /tmp/blk"
    code, _, err = _run(rootfs, tmp_path, ["/bin/sh", "-c", mknod])
    assert b"Operation not permitted" in err


@pytest.mark.real
@needs_runc
def test_scratch_rootfs_mount_points_are_removed(tmp_path: Path) -> None:
    root = _busybox_root(tmp_path / "scratch", with_etc=False, system_dirs=False)
    before = os.stat(root).st_mtime_ns
    time.sleep(0.01)
    code, out, _ = _run(root, tmp_path / "state", ["/bin/sh", "-c", "ls /etc; ls -d /proc/1 /sys/fs /dev/null"])
    assert code == 0 and out.decode().split() == ["hosts", "resolv.conf", "/dev/null", "/proc/1", "/sys/fs"]
    assert sorted(os.listdir(root)) == ["bin", "tmp"]
    assert os.stat(root).st_mtime_ns == before  # only stubs changed the root dir: its times are restored
    # A step that writes into a created /etc keeps it (and its content), but not the stubs.
    code, _, _ = _run(root, tmp_path / "state", ["/bin/sh", "-c", "echo hi > /etc/motd"])
    assert code == 0 and sorted(os.listdir(root / "etc")) == ["motd"]


@pytest.mark.real
@needs_runc
def test_cancel_kills_and_parallel_runs(rootfs: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    t0 = time.monotonic()
    result = run(rootfs, ExecSpec(args=["sleep", "100"], env=[]), tmp_path, cancel=cancel)
    assert result == ExecResult(137, 9) and time.monotonic() - t0 < 5
    early = threading.Event()
    early.set()  # cancelled before runc has even created the container
    assert run(rootfs, ExecSpec(args=["sleep", "100"], env=[]), tmp_path, cancel=early).exit_code == 137
    assert os.listdir(tmp_path / "runc") == []
    results: list[tuple[int, bytes, bytes]] = []
    # Parallel steps never share a rootfs in a build (each has its own overlay); here they do, so give the
    # shared one its mount points up front rather than have runs create and remove them under each other.
    stubs = [rootfs / "etc" / "hosts", rootfs / "etc" / "resolv.conf"]
    for stub in stubs:
        stub.write_text("")
    threads = [threading.Thread(target=lambda i=i: results.append(_run(rootfs, tmp_path, ["echo", str(i)])))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for stub in stubs:
        stub.unlink()
    assert sorted(results) == [(0, f"{i}\n".encode(), b"") for i in range(4)]
