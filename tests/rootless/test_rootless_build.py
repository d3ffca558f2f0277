"""A non-root user's `workbench build`: a user namespace with the user's subordinate ids, overlayfs with
`userxattr`, rootless runc; image file owners kept. And the single-uid fallback of a user without ranges."""

from __future__ import annotations

import grp
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import cached_count, runc_containers, step_outcomes
from tests.rootless.conftest import RootlessUser

DOCKERFILE = """\
FROM localhost:5055/busybox
COPY --chown=1000:1000 f /f
COPY g /g
RUN id -u > /uid && touch /made && chown 1234:1234 /made && rm /g && mkdir -p /o/sub && touch /o/a /o/sub/b
RUN rm -rf /o && mkdir /o && touch /o/c
RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --mount=type=bind,target=/b \\
    --mount=type=secret,id=s,target=/s --mount=type=ssh \\
    touch /c/x /t/y && cat /b/f /s > /seen && stat -c %F /run/buildkit/ssh_agent.0 > /sshkind
RUN --network=none sh -c 'grep -c : /proc/net/dev > /ifaces'
"""


def _layers(oci_tar: Path) -> list[dict[str, tarfile.TarInfo]]:
    """The entries of each layer of the single image in an OCI layout tar, by name."""
    with tarfile.open(oci_tar) as outer:
        def blob(digest: str) -> bytes:
            f = outer.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert f is not None
            return f.read()

        doc = json.loads(blob(json.load(outer.extractfile("index.json"))["manifests"][0]["digest"]))  # type: ignore[arg-type]
        if "manifests" in doc:
            doc = json.loads(blob(doc["manifests"][0]["digest"]))
        layers = []
        for layer in doc["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as t:
                layers.append({m.name: m for m in t.getmembers()}
                              | {f"{m.name}:data": t.extractfile(m).read() for m in t.getmembers() if m.isreg()})  # type: ignore[union-attr]
    return layers


def _context(user: RootlessUser, name: str, dockerfile: str) -> Path:
    ctx = user.mkdir(name)
    user.write(ctx / "Dockerfile", dockerfile)
    user.write(ctx / "f", "from-context\n")
    user.write(ctx / "g", "deleted later\n")
    user.write(ctx / "secret.txt", "s3cret\n")
    return ctx


def test_rootless_build_keeps_owners_whiteouts_and_cache(rootless_user: RootlessUser, registry: str) -> None:
    user = rootless_user
    ctx = _context(user, "owners", DOCKERFILE)
    work = user.mkdir("owners-out")  # outside the context, which the build bind-mounts
    agent = work / "agent.sock"
    ssh_agent = subprocess.Popen(user.command(["ssh-agent", "-D", "-a", str(agent)]), stdout=subprocess.DEVNULL)
    try:
        args = ["build", "--progress", "plain", "--no-cache", "--secret", f"id=s,src={ctx / 'secret.txt'}",
                "--ssh", f"default={agent}", "--output", f"type=oci,dest={work / 'out.tar'}", str(ctx)]
        first = user.run(args, env={"WORKBENCH_SERVER": "0"}, cwd=ctx)  # in-process: enters itself
        assert first.returncode == 0, first.stderr[-3000:]
        assert "rootless:" not in first.stderr  # subordinate ids: no fallback to tell
        layers = _layers(work / "out.tar")
        files = {name: m for layer in layers[1:] for name, m in layer.items() if not name.endswith(":data")}
        data = {name: d for layer in layers for name, d in layer.items() if name.endswith(":data")}
        assert (files["f"].uid, files["f"].gid) == (1000, 1000)
        assert (files["made"].uid, files["made"].gid) == (1234, 1234)
        assert (files["uid"].uid, data["uid:data"]) == (0, b"0\n")
        assert ".wh.g" in layers[3] and "o/.wh..wh..opq" in layers[4] and "o/a" not in layers[4]
        assert data["seen:data"] == b"from-context\ns3cret\n"
        assert data["sshkind:data"] == b"socket\n"
        assert data["ifaces:data"] == b"1\n"  # --network=none: lo alone

        again = user.run([a for a in args if a != "--no-cache"], cwd=ctx)  # through the build server
        assert again.returncode == 0, again.stderr[-3000:]
        outcomes = step_outcomes(again.stderr)
        assert outcomes and set(outcomes.values()) == {"CACHED"}, outcomes
        assert cached_count(again.stderr) == len(outcomes)
    finally:
        ssh_agent.terminate()
        ssh_agent.wait(10)

    root = user.home / ".local/share/workbench"
    for path in (root, root / "snapshots", root / "content", *(root / "snapshots").iterdir()):
        assert os.lstat(path).st_uid == user.uid, path
    with open("/proc/1/mountinfo") as f:  # the host's mount table: every mount was made in our namespace
        assert not [line for line in f if str(user.home) in line]
    assert runc_containers(root) == []


def test_no_subordinate_ids_fall_back_to_one_uid(nosub_user: RootlessUser, registry: str) -> None:
    user = nosub_user
    ctx = _context(user, "single", "FROM localhost:5055/busybox\nCOPY f /f\nRUN id -u > /uid && touch /made\n")
    out = ctx / "out.tar"
    ok = user.run(["build", "--progress", "plain", "--no-cache", "--output", f"type=oci,dest={out}", str(ctx)],
                  env={"WORKBENCH_SERVER": "0"})
    assert ok.returncode == 0, ok.stderr[-3000:]
    notes = [line for line in ok.stderr.splitlines() if line.startswith("rootless:")]
    assert len(notes) == 1 and "no subordinate ids for wbnosub in /etc/subuid" in notes[0], ok.stderr[-2000:]
    layers = _layers(out)
    assert layers[1]["f"].uid == 0 and layers[2]["uid:data"] == b"0\n"

    user.write(ctx / "Dockerfile", "FROM localhost:5055/busybox\nRUN touch /made && chown 1234:1234 /made\n")
    failed = user.run(["build", "--progress", "plain", str(ctx)])  # through the build server this time
    assert failed.returncode == 1
    assert "chown: /made: Invalid argument" in failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.startswith("rootless:")]
    assert len(lines) == 2, failed.stderr[-2000:]  # the fallback note, then why the chown failed
    assert "only your own uid is mapped" in lines[1] and "/etc/subuid" in lines[1] and "usermod" in lines[1]


def test_a_local_output_is_the_users_own(rootless_user: RootlessUser, registry: str) -> None:
    """Image owners (1000, 1234) would map to subordinate ids the user cannot change or remove outside the
    namespace: a local output is written as the user's, as BuildKit's client writes one."""
    user = rootless_user
    ctx = _context(user, "local-out", "FROM localhost:5055/busybox\nCOPY --chown=1000:1000 f /f\n"
                                      "RUN mkdir /d && touch /d/made && chown -R 1234:1234 /d\n")
    dest = user.mkdir("local-out-dest") / "out"
    r = user.run(["build", "--progress", "plain", "--output", f"type=local,dest={dest}", str(ctx)],
                 env={"WORKBENCH_SERVER": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    for path in (dest / "f", dest / "d", dest / "d" / "made"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid), path
    assert (dest / "f").read_text() == "from-context\n"
    removed = user.sh(f"rm -rf {dest} && echo gone")
    assert removed.stdout.strip() == "gone" and not dest.exists(), removed.stderr


def _without_user_namespaces(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`argv` run in a user namespace of root's (ids 0-65535 mapped as they are) whose user.max_user_namespaces
    is 0, as a hardened host sets it: nothing below can create one. (This VM's root may not lower the host's.)"""
    import ctypes
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    pid_r, pid_w = os.pipe()
    go_r, go_w = os.pipe()

    def map_ids() -> None:
        pid = int(os.read(pid_r, 32))
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{pid}/{name}").write_text("0 0 65536\n")
        os.write(go_w, b"1")

    def in_child() -> None:
        if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
            os._exit(97)
        os.write(pid_w, str(os.getpid()).encode())
        os.read(go_r, 1)
        Path("/proc/sys/user/max_user_namespaces").write_text("0\n")  # before exec: this process is the ns' root

    mapper = threading.Thread(target=map_ids, daemon=True)
    mapper.start()
    try:
        return subprocess.run(argv, preexec_fn=in_child, pass_fds=(pid_w, go_r), capture_output=True, text=True,
                              timeout=120)
    finally:
        mapper.join(5)
        for fd in (pid_r, pid_w, go_r, go_w):
            os.close(fd)


def test_user_namespaces_disabled_is_one_line_naming_the_sysctl(rootless_user: RootlessUser, registry: str) -> None:
    """Where user namespaces are off a rootless build cannot start: one line says why and what an admin runs,
    instead of `Operation not permitted`."""
    user = rootless_user
    ctx = _context(user, "no-userns", "FROM localhost:5055/busybox\nRUN true\n")
    from tests.rootless.conftest import PYTHON

    r = _without_user_namespaces(user.command([PYTHON, "-m", "workbench.cli", "build", "--progress", "plain",
                                               str(ctx)], {"WORKBENCH_SERVER": "0"}))
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, r.stderr
    assert "user namespaces are disabled" in errors[0] and "user.max_user_namespaces = 0" in errors[0], errors
    assert "sysctl -w user.max_user_namespaces=" in errors[0], errors


def test_the_copying_snapshotter_says_so_once(rootless_user: RootlessUser, registry: str) -> None:
    user = rootless_user
    ctx = _context(user, "copying", "FROM localhost:5055/busybox\nCOPY f /f\nRUN cat /f > /g\n")
    r = user.run(["build", "--progress", "plain", "--no-cache", str(ctx)],
                 env={"WORKBENCH_SERVER": "0", "WORKBENCH_SNAPSHOTTER": "copy"})
    assert r.returncode == 0, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "copying snapshotter" in line]
    assert said == ["workbench: WORKBENCH_SNAPSHOTTER=copy: using the copying snapshotter, about 1.3x slower than "
                    "overlayfs"], r.stderr


def test_a_local_output_drops_set_id_bits_of_files_the_user_now_owns(rootless_user: RootlessUser,
                                                                      registry: str) -> None:
    """A set-uid/set-gid file the user owns would run with the user's ids (or group): as `cp -a` does when it
    cannot keep the owner, the bits are dropped; a directory's set-gid stays."""
    user = rootless_user
    ctx = _context(user, "local-setid", "FROM scratch\nCOPY --chmod=4755 f /u\nCOPY --chmod=2755 f /g\n"
                                        "COPY --chmod=6750 f /ug\n")
    dest = user.mkdir("local-setid-dest") / "out"
    r = user.run(["build", "--progress", "plain", "--output", f"type=local,dest={dest}", str(ctx)],
                 env={"WORKBENCH_SERVER": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    modes = {name: stat.S_IMODE(os.lstat(dest / name).st_mode) for name in ("u", "g", "ug")}
    assert modes == {"u": 0o755, "g": 0o755, "ug": 0o750}, {k: oct(v) for k, v in modes.items()}


def test_supplementary_groups_still_open_files(rootless_user: RootlessUser, registry: str) -> None:
    """The user's groups are kept in the namespace: a secret readable only through a group is read."""
    user = rootless_user
    subprocess.run(["groupadd", "-f", "wbgrp"], check=True, capture_output=True)
    subprocess.run(["usermod", "-aG", "wbgrp", user.name], check=True, capture_output=True)
    ctx = _context(user, "groups", "FROM localhost:5055/busybox\n"
                                   "RUN --mount=type=secret,id=s,target=/s cat /s > /seen\n")
    secret = user.mkdir("groups-secret") / "secret"
    secret.write_text("by-group\n")
    os.chown(secret, 0, grp.getgrnam("wbgrp").gr_gid)
    os.chmod(secret, 0o640)
    dest = user.mkdir("groups-dest") / "out"
    r = user.run(["build", "--progress", "plain", "--no-cache", "--secret", f"id=s,src={secret}",
                  "--output", f"type=local,dest={dest}", str(ctx)], env={"WORKBENCH_SERVER": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (dest / "seen").read_text() == "by-group\n"


def test_sys_submounts_are_read_only(rootless_user: RootlessUser, registry: str) -> None:
    """/sys is bound recursively read-only: its submounts (/sys/fs/cgroup…) cannot be written either."""
    user = rootless_user
    ctx = _context(user, "sys-ro", "FROM localhost:5055/busybox\n"
                                   "RUN grep ' /sys' /proc/self/mountinfo > /sysmounts\n")
    dest = user.mkdir("sys-ro-dest") / "out"
    r = user.run(["build", "--progress", "plain", "--no-cache", "--output", f"type=local,dest={dest}", str(ctx)],
                 env={"WORKBENCH_SERVER": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in (dest / "sysmounts").read_text().splitlines() if line.split()[4].startswith("/sys")]
    cgroup = [line for line in lines if line.split()[4].startswith("/sys/fs/cgroup")]
    assert cgroup, lines
    for line in lines:
        assert "ro" in line.split()[5].split(","), line  # the per-mount options field


def test_an_insecure_step_gets_every_capability_and_the_devices_the_user_may_open(rootless_user: RootlessUser,
                                                                                  registry: str) -> None:
    """`--security=insecure` rootless: all capabilities of the namespace; of its device nodes, runc can only bind
    the host's, so those the user may not open (or the host lacks, e.g. /dev/cuse) are left out, not a failure."""
    user = rootless_user
    ctx = _context(user, "insecure", "FROM localhost:5055/busybox\nRUN --security=insecure "
                                     "grep CapEff /proc/self/status > /caps && ls /dev > /devs\n")
    out = user.mkdir("insecure-out") / "out"
    r = user.run(["build", "--progress", "plain", "--allow", "security.insecure", "--output",
                  f"type=local,dest={out}", str(ctx)], env={"WORKBENCH_SERVER": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    caps = int((out / "caps").read_text().split()[1], 16)
    assert caps & (1 << 21), (out / "caps").read_text()  # CAP_SYS_ADMIN: beyond the default set
    devices = (out / "devs").read_text().split()
    assert "cuse" not in devices and "null" in devices
    may_open_fuse = user.sh("test -r /dev/fuse -a -w /dev/fuse && echo yes").stdout.strip() == "yes"
    assert ("fuse" in devices) == may_open_fuse
