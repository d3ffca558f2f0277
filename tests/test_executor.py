"""RUN steps in real containers: the system runc on a busybox rootfs."""

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from workbench.executor.runc import ExecError, run
from workbench.executor.spec import ExecSpec

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None or not os.path.exists("/bin/busybox"),
    reason="needs root, runc and busybox-static",
)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rootfs")
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir()
    os.chmod(root / "tmp", 0o1777)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
                                         "u:x:1000:1000::/home/u:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\nu:x:1000:\nextra:x:2000:u\n")
    return root


def _run(rootfs: Path, tmp_path: Path, args: list[str], **kw) -> tuple[int, bytes, bytes]:  # type: ignore[no-untyped-def]
    out: dict[int, bytes] = {1: b"", 2: b""}

    def on_output(fd: int, data: bytes) -> None:
        out[fd] += data

    result = run(rootfs, ExecSpec(args=args, env=kw.pop("env", []), **kw), tmp_path, on_output=on_output)
    return result.exit_code, out[1], out[2]


def test_streams_and_exit_code(rootfs: Path, tmp_path: Path) -> None:
    code, out, err = _run(rootfs, tmp_path, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, b"out\n", b"err\n")


def test_env_cwd_and_user(rootfs: Path, tmp_path: Path) -> None:
    code, out, _ = _run(rootfs, tmp_path, ["/bin/sh", "-c", "echo $A; pwd; id"], env=["A=1"], cwd="/made/here",
                        user="u")
    assert code == 0
    assert out.decode().splitlines() == ["1", "/made/here", "uid=1000 gid=1000 groups=1000,2000"]
    assert (rootfs / "made" / "here").stat().st_uid == 1000
    _, out, _ = _run(rootfs, tmp_path, ["id", "-u"], user="nobody")
    assert out == b"65534\n"
    with pytest.raises(ExecError, match="unable to find user ghost"):
        _run(rootfs, tmp_path, ["true"], user="ghost")


def test_network_none_and_mount_points_cleaned(rootfs: Path, tmp_path: Path) -> None:
    code, out, _ = _run(rootfs, tmp_path, ["cat", "/proc/net/dev"], network="none")
    assert code == 0
    ifaces = [ln.split(":")[0].strip() for ln in out.decode().splitlines() if ":" in ln and "|" not in ln]
    assert ifaces == ["lo"]
    _, out, _ = _run(rootfs, tmp_path, ["cat", "/etc/hosts"])
    assert out.startswith(b"127.0.0.1\tlocalhost")
    assert not (rootfs / "etc" / "hosts").exists()
    assert not (rootfs / "etc" / "resolv.conf").exists()
    code, _, err = _run(rootfs, tmp_path, ["/bin/sh", "-c", "touch /sys/x"])
    assert code != 0 and b"Read-only" in err


def test_cancel_kills_and_parallel_runs(rootfs: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    t0 = time.time()
    result = run(rootfs, ExecSpec(args=["sleep", "100"], env=[]), tmp_path, cancel=cancel)
    assert result.exit_code == 137 and time.time() - t0 < 10
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(_run(rootfs, tmp_path, ["true"])[0])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0, 0]
