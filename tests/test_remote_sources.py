"""ADD from remote sources with real parts: a local HTTP server (ETag, Last-Modified, dumb git HTTP) and git repos."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from workbench.llb.ops import Copy, FileOp, GitSource, HttpSource, ScratchSource, Vertex
from workbench.progress.events import Event, EventBus, VertexCached, VertexLog, VertexStarted, VertexStatus
from workbench.solver.remote import http_filename, redact
from workbench.solver.solver import SolveError, Solver
from workbench.worker import Worker

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="snapshots need root")

LAST_MODIFIED = 1_600_000_000


class Server:
    """127.0.0.1 HTTP server: `files` (path → body and headers) with ETag handling, else files under `dir`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.files: dict[str, dict[str, Any]] = {}
        self.gets: Counter[str] = Counter()  # every GET, by path
        self.bodies: Counter[str] = Counter()  # GETs answered 200 with the body
        self.not_modified: Counter[str] = Counter()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(server.dir), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.gets[self.path] += 1
                f = server.files.get(self.path)
                if f is None:
                    super().do_GET()
                    return
                status = f.get("status", 200)
                etag = f.get("etag")
                sent = [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]
                if status == 200 and etag and etag in sent:
                    server.not_modified[self.path] += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                body: bytes = f.get("body", b"")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if etag:
                    self.send_header("ETag", etag)
                if f.get("last_modified"):
                    self.send_header("Last-Modified", formatdate(f["last_modified"], usegmt=True))
                for k, val in f.get("headers", {}).items():
                    self.send_header(k, val)
                self.end_headers()
                if status == 200:
                    server.bodies[self.path] += 1
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "www").mkdir()
    s = Server(tmp_path / "www")
    yield s
    s.close()


class Build:
    """Solvers on one root, each with its events, as consecutive `workbench build`s would be."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.events: list[Event] = []
        self.solver: Solver | None = None

    def solve(self, target: Vertex) -> list[str]:
        self.close()
        self.events = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        self.solver = Solver(Worker(self.root), bus)
        return self.solver.solve(target).chain

    def path(self, chain: list[str]) -> Path:
        assert self.solver is not None and len(chain) == 1
        return self.solver.worker.snapshots.path(chain[0])

    def ran(self, v: Vertex) -> bool:
        return any(isinstance(e, VertexStarted) and e.vertex == v.digest for e in self.events)

    def cached(self, v: Vertex) -> bool:
        return any(isinstance(e, VertexCached) and e.vertex == v.digest for e in self.events)

    def close(self) -> None:
        if self.solver is not None:
            self.solver.close()
            self.solver.worker.close()
            self.solver = None


@pytest.fixture()
def build(tmp_path: Path) -> Iterator[Build]:
    b = Build(tmp_path / "root")
    yield b
    b.close()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- HTTP -------------------------------------------------------------------------------------------


def test_download_holds_one_file_0600_root_owned_with_last_modified(server: Server, build: Build) -> None:
    server.files["/dl/hello.txt"] = {"body": b"hello\n", "etag": '"v1"', "last_modified": LAST_MODIFIED}
    v = Vertex(HttpSource(server.url + "/dl/hello.txt"), name="ADD hello")
    out = build.path(build.solve(v))
    assert os.listdir(out) == ["hello.txt"]
    st = os.lstat(out / "hello.txt")
    assert (out / "hello.txt").read_bytes() == b"hello\n"
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (0, 0)
    assert st.st_mtime == LAST_MODIFIED
    assert server.bodies["/dl/hello.txt"] == 1
    statuses = [e for e in build.events if isinstance(e, VertexStatus) and e.vertex == v.digest]
    assert statuses and statuses[-1].done and statuses[-1].current == 6


def test_explicit_filename_and_mode_and_no_last_modified(server: Server, build: Build) -> None:
    server.files["/x"] = {"body": b"#!/bin/sh\n"}
    out = build.path(build.solve(Vertex(HttpSource(server.url + "/x", filename="run.sh", mode=0o755))))
    assert os.listdir(out) == ["run.sh"]
    st = os.lstat(out / "run.sh")
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_mtime == 0


def test_filename_from_content_disposition_else_index(server: Server, build: Build) -> None:
    server.files["/get?id=3"] = {"body": b"a", "headers": {"Content-Disposition": 'attachment; filename="r.tgz"'}}
    server.files["/"] = {"body": b"b"}
    assert os.listdir(build.path(build.solve(Vertex(HttpSource(server.url + "/get?id=3"))))) == ["r.tgz"]
    assert os.listdir(build.path(build.solve(Vertex(HttpSource(server.url + "/"))))) == ["index"]


@pytest.mark.parametrize(
    ("url", "filename", "disposition", "expect"),
    [
        ("http://h/a/b.tar.gz?x=1", "", "", "b.tar.gz"),
        ("http://h/a/b.tar.gz", "mine", 'attachment; filename="cd.txt"', "mine"),
        ("http://h/a/b.tar.gz", "", 'attachment; filename="../../cd.txt"', "cd.txt"),
        ("http://h/a/b", "", "attachment; filename*=UTF-8''na%C3%AFve.txt", "naïve.txt"),
        ("http://h/", "", "", "index"),
        ("http://h", "", "inline", "index"),
        ("http://h/x", "../../etc/passwd", "", "passwd"),
    ],
)
def test_filename_rules(url: str, filename: str, disposition: str, expect: str) -> None:
    assert http_filename(url, filename, disposition) == expect


def test_redact_hides_passwords() -> None:
    assert redact("https://u:secret@h:8443/r.git") == "https://u:xxxxx@h:8443/r.git"
    assert redact("git@github.com:o/r.git") == "git@github.com:o/r.git"


def test_checksum_keys_without_a_request_and_must_match(server: Server, build: Build) -> None:
    server.files["/f.bin"] = {"body": b"payload"}
    url = server.url + "/f.bin"
    good = Vertex(HttpSource(url, checksum=sha256(b"payload")))
    out = build.path(build.solve(good))
    assert (out / "f.bin").read_bytes() == b"payload"
    assert server.gets["/f.bin"] == 1
    build.solve(good)
    assert build.cached(good) and server.gets["/f.bin"] == 1  # the checksum alone is the key: no request at all

    bad = Vertex(HttpSource(url, checksum=sha256(b"other")))
    with pytest.raises(SolveError) as e:
        build.solve(bad)
    assert e.value.message == f"digest mismatch {sha256(b'payload')}: {sha256(b'other')}"
    assert e.value.vertex is bad


def test_invalid_checksum_and_scheme_are_refused(server: Server, build: Build) -> None:
    with pytest.raises(SolveError, match="invalid checksum"):
        build.solve(Vertex(HttpSource(server.url + "/f", checksum="md5:abc")))
    with pytest.raises(SolveError, match="only http and https"):
        build.solve(Vertex(HttpSource("file:///etc/passwd")))


def test_unchanged_resource_is_cached_through_etag_and_a_change_misses(server: Server, build: Build) -> None:
    path = "/r.txt"
    server.files[path] = {"body": b"one", "etag": '"e1"', "last_modified": LAST_MODIFIED}
    v = Vertex(HttpSource(server.url + path))
    first = build.solve(v)
    assert build.ran(v) and server.bodies[path] == 1

    assert build.solve(v) == first and build.cached(v)
    assert server.gets[path] == 2 and server.not_modified[path] == 1 and server.bodies[path] == 1

    server.files[path] = {"body": b"two", "etag": '"e2"'}
    second = build.solve(v)
    assert build.ran(v) and second != first
    assert (build.path(second) / "r.txt").read_bytes() == b"two"
    assert os.lstat(build.path(second) / "r.txt").st_mtime == 0  # Last-Modified is part of what is keyed

    server.files[path] = {"body": b"one", "etag": '"e1"', "last_modified": LAST_MODIFIED}
    assert build.solve(v) == first and build.cached(v)  # the older ETag is still known: 304, no body
    assert server.bodies[path] == 2


def test_resource_without_etag_is_downloaded_for_its_key_and_cached_by_content(server: Server, build: Build) -> None:
    server.files["/n"] = {"body": b"same"}
    v = Vertex(HttpSource(server.url + "/n"))
    first = build.solve(v)
    assert build.solve(v) == first and build.cached(v)
    assert server.bodies["/n"] == 2  # no ETag: the content digest needs the body


def test_http_error_names_url_and_status(server: Server, build: Build) -> None:
    url = server.url + "/missing.tar"
    with pytest.raises(SolveError) as e:
        build.solve(Vertex(HttpSource(url)))
    assert "invalid response status 404" in e.value.message and url in e.value.message
    server.files["/boom"] = {"status": 500, "body": b"no"}
    with pytest.raises(SolveError, match="invalid response status 500"):
        build.solve(Vertex(HttpSource(server.url + "/boom", checksum=sha256(b"x"))))


def test_unreachable_server_is_a_solve_error(build: Build) -> None:
    with pytest.raises(SolveError, match="failed to download http://127.0.0.1:9/x"):
        build.solve(Vertex(HttpSource("http://127.0.0.1:9/x")))


def test_add_url_copies_the_file_into_the_image(server: Server, build: Build) -> None:
    server.files["/tool"] = {"body": b"bin", "etag": '"t"'}
    src = Vertex(HttpSource(server.url + "/tool", filename="tool", mode=0o755))
    add = Vertex(FileOp((Copy(1, "/tool", "/usr/bin/tool"),)), inputs=(Vertex(ScratchSource()), src))
    chain = build.solve(add)
    assert build.solver is not None
    dest = build.solver.worker.snapshots.path(chain[-1]) / "usr/bin/tool"
    assert dest.read_bytes() == b"bin" and stat.S_IMODE(dest.stat().st_mode) == 0o755


# -- git --------------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "GIT_CONFIG_NOSYSTEM": "1"}
    proc = subprocess.run(["git", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


class Repo:
    """A work repo `src` and its bare copy in the web root (dumb HTTP); `publish` pushes to it."""

    def __init__(self, tmp: Path, server: Server) -> None:
        self.src = tmp / "src"
        self.src.mkdir()
        git(self.src, "init", "-q")
        (self.src / "README").write_text("v1\n")
        (self.src / "run.sh").write_text("#!/bin/sh\n")
        (self.src / "run.sh").chmod(0o755)
        (self.src / "sub" / "deep").mkdir(parents=True)
        (self.src / "sub" / "inner.txt").write_text("inner\n")
        (self.src / "sub" / "deep" / "x").write_text("x\n")
        os.symlink("README", self.src / "link")
        git(self.src, "add", "-A")
        git(self.src, "commit", "-qm", "one")
        git(self.src, "tag", "-a", "v1", "-m", "release 1")
        self.c1 = git(self.src, "rev-parse", "HEAD")
        (self.src / "README").write_text("v2\n")
        git(self.src, "commit", "-qam", "two")
        self.c2 = git(self.src, "rev-parse", "HEAD")
        self.bare = server.dir / "repo.git"
        git(tmp, "clone", "-q", "--bare", str(self.src), str(self.bare))
        git(self.bare, "update-server-info")
        self.http = server.url + "/repo.git"

    def commit(self, text: str) -> str:
        (self.src / "README").write_text(text)
        git(self.src, "commit", "-qam", text)
        return git(self.src, "rev-parse", "HEAD")

    def publish(self) -> None:
        git(self.src, "push", "-q", "--tags", "-f", str(self.bare), "main")
        git(self.bare, "update-server-info")


@pytest.fixture()
def repo(tmp_path: Path, server: Server) -> Repo:
    return Repo(tmp_path, server)


def test_branch_checkout_has_git_modes_and_no_git_dir(repo: Repo, build: Build) -> None:
    out = build.path(build.solve(Vertex(GitSource(str(repo.src), "main"))))
    assert sorted(os.listdir(out)) == ["README", "link", "run.sh", "sub"]
    assert (out / "README").read_text() == "v2\n"
    assert stat.S_IMODE(os.lstat(out / "README").st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(out / "run.sh").st_mode) == 0o755
    assert os.readlink(out / "link") == "README"
    assert all(os.lstat(p).st_uid == 0 and os.lstat(p).st_gid == 0 for p in [out, *out.rglob("*")])


@pytest.mark.parametrize(("ref", "expect"), [("", "v2\n"), ("v1", "v1\n"), ("refs/tags/v1", "v1\n"),
                                             ("c1", "v1\n"), ("refs/heads/main", "v2\n")])
def test_ref_kinds(repo: Repo, build: Build, ref: str, expect: str) -> None:
    ref = repo.c1 if ref == "c1" else ref
    out = build.path(build.solve(Vertex(GitSource(str(repo.src), ref))))
    assert (out / "README").read_text() == expect


def test_subdir_checkout(repo: Repo, build: Build) -> None:
    out = build.path(build.solve(Vertex(GitSource(str(repo.src), "main", subdir="sub", keep_git_dir=True))))
    assert sorted(os.listdir(out)) == ["deep", "inner.txt"]  # no .git: only a whole checkout keeps it
    assert (out / "deep" / "x").read_text() == "x\n"
    with pytest.raises(SolveError, match="subdir 'nope' not found"):
        build.solve(Vertex(GitSource(str(repo.src), "main", subdir="nope")))


def test_keep_git_dir_over_dumb_http(repo: Repo, build: Build) -> None:
    out = build.path(build.solve(Vertex(GitSource(repo.http, "main", keep_git_dir=True))))
    assert (out / ".git").is_dir() and (out / "README").read_text() == "v2\n"
    assert git(out, "rev-parse", "HEAD") == repo.c2
    assert git(out, "remote", "get-url", "origin") == repo.http
    assert git(out, "status", "--porcelain") == ""
    assert git(out, "rev-parse", "refs/heads/main") == repo.c2
    assert git(out, "cat-file", "-t", repo.c2) == "commit"
    assert not (out / ".git" / "objects" / "info" / "alternates").exists()  # self-contained

    plain = build.path(build.solve(Vertex(GitSource(repo.http, "v1"))))
    assert not (plain / ".git").exists() and (plain / "README").read_text() == "v1\n"


def test_tag_with_keep_git_dir_keeps_the_tag(repo: Repo, build: Build) -> None:
    out = build.path(build.solve(Vertex(GitSource(str(repo.src), "v1", keep_git_dir=True))))
    assert git(out, "rev-parse", "HEAD") == repo.c1
    assert git(out, "describe", "--tags") == "v1"


def test_moving_a_branch_changes_the_key(repo: Repo, build: Build) -> None:
    v = Vertex(GitSource(repo.http, "main"))
    first = build.solve(v)
    assert build.solve(v) == first and build.cached(v)
    c3 = repo.commit("v3\n")
    repo.publish()
    second = build.solve(v)
    assert build.ran(v) and (build.path(second) / "README").read_text() == "v3\n"
    logs = b"".join(e.data for e in build.events if isinstance(e, VertexLog) and e.vertex == v.digest)
    assert b"From " + repo.http.removesuffix(".git").encode() in logs and b"fatal" not in logs
    pinned = Vertex(GitSource(repo.http, c3))
    assert (build.path(build.solve(pinned)) / "README").read_text() == "v3\n"
    assert not build.ran(pinned) or not any(isinstance(e, VertexLog) for e in build.events)  # c3 is local now


def test_cache_repo_is_shared_and_a_pinned_sha_needs_no_network(repo: Repo, server: Server, build: Build) -> None:
    build.solve(Vertex(GitSource(repo.http, "main")))
    server.close()  # the commit is in ROOT/git now: a full sha is keyed and fetched offline
    out = build.path(build.solve(Vertex(GitSource(repo.http, repo.c2, subdir="sub"))))
    assert (out / "inner.txt").read_text() == "inner\n"
    assert len([p for p in (build.root / "git").iterdir() if p.is_dir()]) == 1


def test_concurrent_builds_share_the_cache_repo(repo: Repo, tmp_path: Path) -> None:
    subdirs = ["sub", "sub/deep", "", "sub"]
    builds = [Build(tmp_path / "shared-root") for _ in subdirs]
    results: dict[int, str] = {}

    def one(i: int) -> None:
        chain = builds[i].solve(Vertex(GitSource(repo.http, "main", subdir=subdirs[i])))
        results[i] = " ".join(sorted(os.listdir(builds[i].path(chain))))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(subdirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for b in builds:
        b.close()
    assert results == {0: "deep inner.txt", 1: "x", 2: "README link run.sh sub", 3: "deep inner.txt"}


def test_unknown_ref_and_unreachable_remote(repo: Repo, build: Build) -> None:
    with pytest.raises(SolveError, match="does not contain ref nope"):
        build.solve(Vertex(GitSource(str(repo.src), "nope")))
    with pytest.raises(SolveError) as e:
        build.solve(Vertex(GitSource("http://127.0.0.1:9/none.git", "main")))
    assert "failed to resolve main in http://127.0.0.1:9/none.git" in e.value.message
    assert "Failed to connect" in e.value.message or "Connection refused" in e.value.message
    with pytest.raises(SolveError, match="failed to fetch"):
        build.solve(Vertex(GitSource(str(repo.src), "0" * 40)))


def test_submodules_are_checked_out(tmp_path: Path, repo: Repo, build: Build) -> None:
    top = tmp_path / "top"
    top.mkdir()
    git(top, "init", "-q")
    git(top, "submodule", "add", "-q", str(repo.src), "vendor/lib")
    git(top, "commit", "-qm", "with submodule")
    out = build.path(build.solve(Vertex(GitSource(str(top), "main"))))
    assert (out / "vendor" / "lib" / "README").read_text() == "v2\n"
    assert not (out / ".git").exists() and not (out / "vendor" / "lib" / ".git").exists()
    kept = build.path(build.solve(Vertex(GitSource(str(top), "main", keep_git_dir=True))))
    assert git(kept / "vendor" / "lib", "rev-parse", "HEAD") == repo.c2
