"""RUN --mount (bind, cache, tmpfs, secret, ssh) and --security=insecure, solved with real runc on busybox."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.cache.mounts import CacheMountError, CacheMounts
from workbench.executor.spec import MASKED_PATHS, ExecSpec, generate_spec
from workbench.llb.ops import ExecOp, ImageSource, LocalSource, MergeOp, Mount, Vertex
from workbench.progress.events import Event, EventBus, VertexStarted
from workbench.solver.session import SecretSource, Session
from workbench.solver.solver import LocalContext, Result, SolveError, Solver
from workbench.worker import Worker

BUSYBOX = "localhost:5055/busybox"
SECRET = "s3cr3t-VALUE-do-not-leak-7f1c"


# --- helpers -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Vertex:
    """The busybox image vertex, pinned to its manifest digest."""
    from workbench.image.content import ContentStore
    from workbench.image.pull import pull
    from workbench.image.reference import parse_reference

    image = pull(parse_reference(BUSYBOX), ContentStore(tmp_path_factory.mktemp("content")))
    return Vertex(ImageSource(BUSYBOX, image.manifest_digest), name="busybox")


class Build:
    """A Solver on one root that records every event."""

    def __init__(self, root: Path, contexts: dict[str, LocalContext] | None = None,
                 session: Session | None = None) -> None:
        self.events: list[Event] = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        self.worker = Worker(root)
        self.solver = Solver(self.worker, bus, contexts, session=session)

    def solve(self, v: Vertex) -> Result:
        return self.solver.solve(v)

    def read(self, result: Result, path: str) -> str:
        with self.worker.snapshots.mount_readonly(result.chain) as view:
            return (view / path.lstrip("/")).read_text()

    def layer(self, result: Result) -> set[str]:
        """Every path in the top snapshot (the step's own changes), less unchanged copied-up parent dirs."""
        top = self.worker.snapshots.path(result.chain[-1])
        paths = {str(p.relative_to(top)) for p in top.rglob("*")}
        with self.worker.snapshots.mount_readonly(result.chain[:-1]) as lower:
            def same_dir(rel: str) -> bool:
                a, b = os.lstat(top / rel), os.lstat(lower / rel) if (lower / rel).is_dir() else None
                return b is not None and (top / rel).is_dir() and (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns) == (
                    b.st_mode, b.st_uid, b.st_gid, b.st_mtime_ns)

            return {rel for rel in paths if not same_dir(rel)}

    def ran(self, v: Vertex) -> bool:
        return any(isinstance(e, VertexStarted) and e.vertex == v.digest for e in self.events)

    def close(self) -> None:
        self.solver.close()
        self.worker.close()


@pytest.fixture()
def build(tmp_path: Path) -> Iterator[list[Build]]:
    made: list[Build] = []
    yield made
    for b in made:
        b.close()


def _new(builds: list[Build], root: Path, **kw: object) -> Build:
    b = Build(root, **kw)  # type: ignore[arg-type]
    builds.append(b)
    return b


def run(base: Vertex, script: str, *mounts: Mount, inputs: tuple[Vertex, ...] = (), **kw: object) -> Vertex:
    op = ExecOp(args=("/bin/sh", "-c", script), env=("PATH=/bin",), mounts=tuple(mounts), **kw)  # type: ignore[arg-type]
    return Vertex(op, (base, *inputs), name=f"RUN {script[:40]}")


# --- no runc needed ------------------------------------------------------------------------------------------


def test_insecure_spec_fields(tmp_path: Path) -> None:
    cfg = generate_spec(ExecSpec(args=["true"], env=[], security="insecure"), tmp_path, tmp_path, tmp_path, 0, 0, [])
    caps = cfg["process"]["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted", "inheritable", "ambient"}
    assert "CAP_SYS_ADMIN" in caps["effective"] or os.geteuid() != 0
    assert cfg["linux"]["maskedPaths"] == [] and cfg["linux"]["readonlyPaths"] == []
    assert {"allow": True, "type": "c", "access": "rwm"} in cfg["linux"]["resources"]["devices"]
    assert "/dev/fuse" in [d["path"] for d in cfg["linux"]["devices"]]
    sys_mount = next(m for m in cfg["mounts"] if m["destination"] == "/sys")
    assert "rw" in sys_mount["options"] and "ro" not in sys_mount["options"]
    sandbox = generate_spec(ExecSpec(args=["true"], env=[]), tmp_path, tmp_path, tmp_path, 0, 0, [])
    assert sandbox["linux"]["maskedPaths"] == MASKED_PATHS and "devices" not in sandbox["linux"]
    with pytest.raises(ValueError, match="security mode"):
        generate_spec(ExecSpec(args=["true"], env=[], security="bogus"), tmp_path, tmp_path, tmp_path, 0, 0, [])


def test_user_mounts_sorted_parents_first(tmp_path: Path) -> None:
    from workbench.executor.spec import Mount as OciMount

    mounts = [OciMount("tmpfs", "tmpfs", "/a/b/c"), OciMount("tmpfs", "tmpfs", "/a")]
    spec = ExecSpec(args=["true"], env=[], mounts=mounts)
    cfg = generate_spec(spec, tmp_path, tmp_path, tmp_path, 0, 0, [])
    assert [m["destination"] for m in cfg["mounts"]][-2:] == ["/a", "/a/b/c"]


def test_cache_dirs_sharing_semantics(tmp_path: Path) -> None:
    cm = CacheMounts(tmp_path)
    with cm.acquire("c", "shared", mode=0o700, uid=1000, gid=1000) as a, cm.acquire("c", "shared") as b:
        assert a == b  # shared users share one dir
        st = os.stat(a)
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o700, 1000, 1000)
        with cm.acquire("c", "private") as p:
            assert p != a  # in use: a private user gets a separate dir
    with cm.acquire("c", "private") as p1:
        assert p1 == a  # free again: reused, content kept
    with cm.acquire("other", "shared") as o:
        assert o.parent != a.parent
    # locked: a second user waits until the first is done
    order: list[str] = []
    with cm.acquire("l", "locked") as first:
        (first / "x").write_text("1")

        def second() -> None:
            with cm.acquire("l", "locked") as d:
                order.append("second:" + (d / "x").read_text())

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.4)
        order.append("first-done")
    t.join(5)
    assert order == ["first-done", "second:1"]
    cancel = threading.Event()
    cancel.set()
    with cm.acquire("l", "locked"), pytest.raises(CacheMountError, match="canceled"):
        with cm.acquire("l", "locked", cancel=cancel):
            pass
    with pytest.raises(CacheMountError, match="sharing"):
        with cm.acquire("c", "bogus"):
            pass


# --- cache mounts -----------------------------------------------------------------------------------------------


def test_cache_mount_persists_across_solves_and_ids(base: Vertex, tmp_path: Path, build: list[Build]) -> None:
    root = tmp_path / "root"
    cache = Mount("cache", "/cache", id="pkgs")
    script = "echo {n} >> /cache/log; cat /cache/log > /out; stat -c %a:%u:%g /cache > /perm"
    b1 = _new(build, root)
    r1 = b1.solve(run(base, script.format(n=1), cache))
    assert b1.read(r1, "out") == "1\n"
    assert b1.layer(r1) == {"out", "perm"}  # no /cache stub, nothing written under the mount
    b1.close()
    build.remove(b1)
    b2 = _new(build, root)  # a new solver (and process state) on the same root
    r2 = b2.solve(run(base, script.format(n=2), cache))
    assert b2.read(r2, "out") == "1\n2\n"
    r3 = b2.solve(run(base, script.format(n=3), Mount("cache", "/cache", id="other", mode=0o700, uid=1000, gid=7)))
    assert b2.read(r3, "out") == "3\n" and b2.read(r3, "perm") == "700:1000:7\n"
    r4 = b2.solve(run(base, script.format(n=4), Mount("cache", "/cache")))  # id defaults to the target
    assert b2.read(r4, "out") == "4\n" and b2.read(r4, "perm") == "755:0:0\n"
    assert (root / "cachemounts").is_dir()


def test_cache_mount_seeded_from_input(base: Vertex, tmp_path: Path, build: list[Build]) -> None:
    b = _new(build, tmp_path / "root")
    seed = run(base, "mkdir -p /seed && echo seeded > /seed/f")
    r = b.solve(run(base, "cat /cache/f > /out; echo more >> /cache/f",
                    Mount("cache", "/cache", input=1, source="/seed", id="s"), inputs=(seed,)))
    assert b.read(r, "out") == "seeded\n"
    r2 = b.solve(run(base, "cat /cache/f > /out2", Mount("cache", "/cache", input=1, source="/seed", id="s"),
                     inputs=(seed,)))
    assert b.read(r2, "out2") == "seeded\nmore\n"


@pytest.mark.parametrize(("sharing", "expect"), [
    ("private", [["a"], ["b"]]),  # concurrent users get separate dirs
    ("shared", [["a", "b"], ["a", "b"]]),  # both see both markers
    ("locked", []),  # the second waits for the first, then sees its marker (checked by start order)
])
def test_cache_sharing_under_concurrency(base: Vertex, tmp_path: Path, build: list[Build], sharing: str,
                                         expect: list[list[str]]) -> None:
    b = _new(build, tmp_path / "root")
    m = Mount("cache", "/cache", id="c", sharing=sharing)
    steps = [run(base, f"touch /cache/{n}; sleep 1; ls /cache > /ls-{n}", m) for n in "ab"]
    started = time.monotonic()
    b.solve(Vertex(MergeOp(), tuple(steps)))  # both steps run at once
    elapsed = time.monotonic() - started
    results = {n: b.solve(step) for n, step in zip("ab", steps, strict=True)}  # cached now: their own outputs
    seen = {n: b.read(results[n], f"ls-{n}").split() for n in "ab"}
    if sharing == "locked":
        first, second = sorted("ab", key=lambda n: len(seen[n]))
        assert [seen[first], sorted(seen[second])] == [[first], ["a", "b"]]
        assert elapsed >= 2
    else:
        assert [sorted(seen["a"]), sorted(seen["b"])] == expect
        if sharing == "private":
            assert elapsed < 4


# --- bind mounts ------------------------------------------------------------------------------------------------


@pytest.fixture()
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    (ctx / "dir" / "keep.txt").write_text("keep\n")
    (ctx / "dir" / "ignored.txt").write_text("ignored\n")
    (ctx / "dir" / "sub" / "deep.txt").write_text("deep\n")
    return ctx


def _ignore(rel: str) -> bool:
    return rel in ("dir/ignored.txt", "b.txt")


def test_bind_from_vertex_rw_discarded_and_scratch(base: Vertex, tmp_path: Path, build: list[Build]) -> None:
    b = _new(build, tmp_path / "root")
    stage = run(base, "mkdir /data && echo from-stage > /data/f")
    r = b.solve(run(
        base,
        "cat /src/f > /out; (echo x > /src/new) 2>/dev/null && echo writable > /ro-check; "
        "echo changed > /rw/f; echo new > /rw/g; cat /rw/f >> /out; ls -A /empty > /empty-ls",
        Mount("bind", "/src", input=1, source="/data", readonly=True),
        Mount("bind", "/rw", input=1, source="/data"),
        Mount("bind", "/empty", input=-1, readonly=True),
        inputs=(stage,),
    ))
    assert b.read(r, "out") == "from-stage\nchanged\n"
    assert b.read(r, "empty-ls") == ""
    assert b.layer(r) == {"out", "empty-ls"}  # no /ro-check: the read-only bind refused the write
    staged = b.solve(stage)
    with b.worker.snapshots.mount_readonly(staged.chain) as view:
        assert (view / "data" / "f").read_text() == "from-stage\n"  # rw writes were discarded
        assert not (view / "data" / "g").exists()


def test_bind_from_context_hides_dockerignored(base: Vertex, tmp_path: Path, context: Path,
                                               build: list[Build]) -> None:
    b = _new(build, tmp_path / "root", contexts={"context": LocalContext(context, _ignore)})
    ctx = Vertex(LocalSource("context"), name="context")
    r = b.solve(run(base, "cd /ctx && find . | sort > /out; cat /one > /one-out; echo w > /rw/dir/keep.txt",
                    Mount("bind", "/ctx", input=1, source="/", readonly=True),
                    Mount("bind", "/one", input=1, source="/dir/keep.txt", readonly=True),
                    Mount("bind", "/rw", input=1, source="/"),
                    inputs=(ctx,)))
    assert b.read(r, "out").split() == [".", "./a.txt", "./dir", "./dir/keep.txt", "./dir/sub", "./dir/sub/deep.txt"]
    assert b.read(r, "one-out") == "keep\n"
    assert (context / "dir" / "keep.txt").read_text() == "keep\n"  # the client's context is never written
    with pytest.raises(SolveError, match="not found"):
        b.solve(run(base, "true", Mount("bind", "/x", input=1, source="/b.txt", readonly=True), inputs=(ctx,)))


def test_bound_context_file_change_reruns_only_that(base: Vertex, tmp_path: Path, context: Path,
                                                    build: list[Build]) -> None:
    root = tmp_path / "root"

    def step() -> Vertex:
        ctx = Vertex(LocalSource("context"), name="context")
        return run(base, "cat /m/a.txt > /out", Mount("bind", "/m/a.txt", input=1, source="a.txt", readonly=True),
                   inputs=(ctx,))

    def solve() -> tuple[bool, str]:
        b = _new(build, root, contexts={"context": LocalContext(context)})
        v = step()
        r = b.solve(v)
        return b.ran(v), b.read(r, "out")

    assert solve() == (True, "a\n")
    assert solve() == (False, "a\n")
    (context / "b.txt").write_text("other change\n")
    (context / "a.txt").touch()
    assert solve() == (False, "a\n")
    (context / "a.txt").write_text("A2\n")
    assert solve() == (True, "A2\n")


# --- tmpfs ------------------------------------------------------------------------------------------------------


def test_tmpfs_contents_stay_out_of_the_layer(base: Vertex, tmp_path: Path, build: list[Build]) -> None:
    b = _new(build, tmp_path / "root")
    r = b.solve(run(base, "echo hi > /scratch/x; grep ' /scratch ' /proc/mounts > /out",
                    Mount("tmpfs", "/scratch", size=1 << 20)))
    line = b.read(r, "out")
    assert line.startswith("tmpfs /scratch tmpfs") and "size=1024k" in line
    assert b.layer(r) == {"out"}


# --- secrets ----------------------------------------------------------------------------------------------------


def _sha(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def test_secret_file_env_and_nothing_leaks(base: Vertex, tmp_path: Path, build: list[Build],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "tok"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("WB_TEST_SECRET", SECRET)
    session = Session(secrets={"tok": SecretSource("tok", path=str(secret_file)),
                               "envtok": SecretSource("envtok", env="WB_TEST_SECRET")})
    root = tmp_path / "root"
    b = _new(build, root, session=session)
    r = b.solve(run(
        base,
        "sha256sum /run/secrets/tok | cut -d' ' -f1 > /sum; stat -c %a:%u:%g /run/secrets/tok > /perm; "
        "stat -c %a:%u:%g /etc/custom/tok > /perm2; printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1 > /envsum; "
        "(echo x > /run/secrets/tok) 2>/dev/null || echo ro > /ro; "
        "test -e /run/secrets/envtok || echo no-file > /nofile",
        Mount("secret", "/run/secrets/tok", id="tok", required=True),
        Mount("secret", "/etc/custom/tok", id="tok", mode=0o440, uid=1000, gid=2000),
        Mount("secret", "", id="envtok", env="TOKEN"),
        Mount("secret", "/run/secrets/absent", id="absent"),  # optional and missing: skipped
    ))
    assert b.read(r, "sum").strip() == _sha(SECRET)
    assert b.read(r, "envsum").strip() == _sha(SECRET)
    assert b.read(r, "perm") == "400:0:0\n" and b.read(r, "perm2") == "440:1000:2000\n"
    assert b.read(r, "ro") == "ro\n" and b.read(r, "nofile") == "no-file\n"
    assert b.layer(r) == {"sum", "perm", "perm2", "envsum", "ro", "nofile"}  # no /run, /etc/custom stubs
    # the value is in no snapshot file, no event, no cache key
    for path in (root / "snapshots").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path
    assert all(SECRET not in repr(e) for e in b.events)
    assert SECRET.encode() not in (root / "cache.db").read_bytes()


def test_missing_required_secret_fails(base: Vertex, tmp_path: Path, build: list[Build]) -> None:
    b = _new(build, tmp_path / "root")
    with pytest.raises(SolveError, match="^secret nope: not found$"):
        b.solve(run(base, "true", Mount("secret", "/run/secrets/nope", id="nope", required=True)))


# --- ssh --------------------------------------------------------------------------------------------------------


def _ssh_add_bundle(dest: Path) -> Path:
    """The host's ssh-add with its libraries and loader, runnable in busybox as `/h/ld.so --library-path /h ...`."""
    dest.mkdir()
    ssh_add = shutil.which("ssh-add")
    assert ssh_add is not None
    shutil.copy(ssh_add, dest / "ssh-add")
    for line in subprocess.run(["ldd", ssh_add], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            shutil.copy(lib, dest / ("ld.so" if "ld-linux" in lib else os.path.basename(lib)))
    return dest


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real ssh-agent holding one fresh key: (socket, key fingerprint)."""
    if not (shutil.which("ssh-agent") and shutil.which("ssh-add") and shutil.which("ssh-keygen")):
        pytest.skip("needs openssh-client (ssh-agent, ssh-add, ssh-keygen)")
    sock = str(tmp_path / "agent.sock")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wb-test", "-f", str(key)], check=True)
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": sock}, check=True,
                       capture_output=True)
        fp = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True)
        yield sock, fp.stdout.split()[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def test_ssh_forwarding_through_real_agent(base: Vertex, tmp_path: Path, agent: tuple[str, str],
                                           build: list[Build]) -> None:
    sock, fingerprint = agent
    tools = _ssh_add_bundle(tmp_path / "tools")
    b = _new(build, tmp_path / "root", contexts={"tools": LocalContext(tools)},
             session=Session(ssh={"default": (sock,)}))
    ctx = Vertex(LocalSource("tools"), name="tools")
    r = b.solve(run(
        base,
        "echo $SSH_AUTH_SOCK > /sock; stat -c %F:%a /run/buildkit/ssh_agent.0 > /kind; "
        "/h/ld.so --library-path /h /h/ssh-add -l > /out 2>&1",
        Mount("ssh", "/run/buildkit/ssh_agent.0", id="default", required=True),
        Mount("bind", "/h", input=1, readonly=True),
        inputs=(ctx,),
    ))
    assert fingerprint in b.read(r, "out") and "wb-test" in b.read(r, "out")
    assert b.read(r, "sock") == "/run/buildkit/ssh_agent.0\n"
    assert b.read(r, "kind") == "socket:600\n"
    assert b.layer(r) == {"sock", "kind", "out"}
    with pytest.raises(SolveError, match='no SSH key "other" forwarded from the client'):
        b.solve(run(base, "true", Mount("ssh", "/run/buildkit/ssh_agent.0", id="other", required=True)))
    key_only = _new(build, tmp_path / "root2", session=Session(ssh={"default": (str(tmp_path / "id_ed25519"),)}))
    with pytest.raises(SolveError, match="not supported"):
        key_only.solve(run(base, "true", Mount("ssh", "/run/buildkit/ssh_agent.0", required=True)))
    optional = run(base, "test -S /run/buildkit/ssh_agent.0 || echo none > /out",
                   Mount("ssh", "/run/buildkit/ssh_agent.0", id="other"))
    fresh = _new(build, tmp_path / "root", session=Session(ssh={"default": (sock,)}))  # a failed solve stays canceled
    assert fresh.read(fresh.solve(optional), "out") == "none\n"


# --- security=insecure ------------------------------------------------------------------------------------------


def _cap_eff() -> str:
    status = Path("/proc/self/status").read_text()
    return next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:"))


def test_insecure_needs_entitlement_and_gets_all_caps(base: Vertex, tmp_path: Path, build: list[Build]) -> None:
    script = "grep CapEff /proc/self/status | cut -f2 > /caps; grep ' /sys ' /proc/mounts | cut -d' ' -f4 > /sys-opts"
    denied = _new(build, tmp_path / "root")
    with pytest.raises(SolveError, match="^security.insecure is not allowed$"):
        denied.solve(run(base, script, security="insecure"))
    b = _new(build, tmp_path / "root2", session=Session(entitlements=frozenset({"security.insecure"})))
    r = b.solve(run(base, script, security="insecure"))
    caps = b.read(r, "caps").strip()
    assert caps == _cap_eff()  # every capability we have (all ones where nothing is dropped from us)
    assert b.read(r, "sys-opts").startswith("rw")
    sandboxed = b.solve(run(base, script))
    assert int(b.read(sandboxed, "caps"), 16) < int(caps, 16) and b.read(sandboxed, "sys-opts").startswith("ro")
