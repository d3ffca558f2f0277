"""Remote sources for ADD: HTTP(S) downloads and git checkouts, as BuildKit's http and git sources do them.

HTTP: with a checksum the key is the checksum (no request at key time); without one, the key is the
content digest, found by a request at key time that reuses stored ETags (a 304 names content already
under `ROOT/http`). Git: the key is the commit the ref resolves to (`git ls-remote`, or the sha itself);
commits are fetched into a bare repo per remote under `ROOT/git`, shared between builds under a flock.
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import fcntl
import hashlib
import json
import os
import posixpath
import re
import secrets
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.http.client import HttpClient, Response, range_reopen, resumable, shared_client
from workbench.http.errors import HttpError, redact
from workbench.llb.ops import GitSource, HttpSource, Vertex
from workbench.progress.events import VertexLog, VertexStatus
from workbench.solver.types import SolveError
from workbench.state_root import make_private_dir

if TYPE_CHECKING:
    from workbench.solver.job import SolveJob
    from workbench.worker import Worker

_CHUNK = 1 << 16
_TIMEOUT = 60
_MAX_ETAGS = 8
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class _HttpResolved:
    digest: str  # "sha256:…" of the content
    filename: str
    last_modified: str  # the Last-Modified header as sent, or ""


@dataclass(frozen=True)
class _GitResolved:
    sha: str
    ref: str  # the full ref name it came from (refs/heads/…, refs/tags/…), "" for a sha


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive lock shared by threads and processes (each open file description locks on its own)."""
    make_private_dir(path.parent)  # `ROOT/http`, `ROOT/git`: workbench's state, private as the rest
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def source_key(worker: Worker, job: SolveJob, v: Vertex) -> str:
    """The part of `v`'s cache key that stands for the remote content (what it resolved to is kept in `job`
    for `fetch`, so that the fetch gets exactly what was keyed)."""
    if isinstance(v.op, HttpSource):
        return _http_key(worker, job, v, v.op)
    if isinstance(v.op, GitSource):
        return _git_key(job, v, v.op)
    raise SolveError(f"not a remote source: {type(v.op).__name__}", v)


def fetch(worker: Worker, job: SolveJob, v: Vertex) -> list[str]:
    """Fetch the remote content into a new snapshot; returns the chain."""
    if isinstance(v.op, HttpSource):
        return [_http_fetch(worker, job, v, v.op)]
    if isinstance(v.op, GitSource):
        return [_git_fetch(worker, job, v, v.op)]
    raise SolveError(f"not a remote source: {type(v.op).__name__}", v)


# -- HTTP -------------------------------------------------------------------------------------------


def safe_filename(name: str) -> str:
    """A single path component from `name` ("index" when nothing usable is left)."""
    base = posixpath.basename(posixpath.normpath("/" + name.replace("\\", "/")))
    return base if base not in ("", ".", "..", "/") else "index"


def http_filename(url: str, filename: str, content_disposition: str = "") -> str:
    """BuildKit's rule: the given name, else Content-Disposition's filename, else the URL's last segment, else index."""
    if filename:
        return safe_filename(filename)
    if content_disposition:
        msg = email.message.Message()
        msg["Content-Disposition"] = content_disposition
        cd_name = msg.get_param("filename", header="Content-Disposition")
        if isinstance(cd_name, tuple):  # RFC 2231 (filename*=charset''value)
            cd_name = email.utils.collapse_rfc2231_value(cd_name)
        if isinstance(cd_name, str) and cd_name and not cd_name.endswith("/"):
            return safe_filename(cd_name)
    base = posixpath.basename(urllib.parse.urlsplit(url).path)
    return safe_filename(base) if base else "index"


def _etag_value(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


class _Store:
    """Downloaded content (`sha256/<hex>`) and what each URL's ETags stand for (`urls/<hash>.json`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob(self, digest: str) -> Path:
        return self.root / "sha256" / digest.removeprefix("sha256:")

    def _meta_path(self, url: str) -> Path:
        return self.root / "urls" / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def lock(self, url: str) -> contextlib.AbstractContextManager[None]:
        return _flock(self.root / "urls" / (hashlib.sha256(url.encode()).hexdigest() + ".lock"))

    def entries(self, url: str) -> list[dict[str, str]]:
        """Known ETags of `url` whose content is still stored, newest first."""
        try:
            data = json.loads(self._meta_path(url).read_text())
        except (OSError, ValueError):
            return []
        return [e for e in data.get("entries", []) if e.get("etag") and self.blob(e.get("digest", "")).is_file()]

    def add_entry(self, url: str, entry: dict[str, str]) -> None:
        entries = [entry] + [e for e in self.entries(url) if e["etag"] != entry["etag"]]
        body = {"url": redact(url), "entries": entries[:_MAX_ETAGS]}
        _atomic_write(self._meta_path(url), json.dumps(body, indent=1).encode())


def _http() -> HttpClient:
    """One client for every download (the environment's proxies, redirects followed, as urllib's urlopen)."""
    return shared_client(timeout=_TIMEOUT, user_agent="workbench")


def _failed(url: str, e: HttpError, v: Vertex) -> SolveError:
    if e.status:
        return SolveError(f"failed to download {redact(url)}: invalid response status {e.status}", v)
    return SolveError(f"failed to download {redact(url)}: {e.reason}", v)


def _open(url: str, v: Vertex, headers: dict[str, str]) -> Response:
    """GET `url`: the answer (200, or 304 to a conditional request); other failures raise a SolveError."""
    try:
        return _http().request("GET", url, headers=headers, ok=(304,))
    except HttpError as e:
        raise _failed(url, e, v) from None


def _download(job: SolveJob, v: Vertex, url: str, resp: Response, dest_dir: Path) -> tuple[str, Path]:
    """Stream the body into a temp file under `dest_dir` while hashing it; returns (digest, temp path). A body
    that breaks off is resumed with Range requests when the server validates them (If-Range)."""
    make_private_dir(dest_dir)
    tmp = dest_dir / f".download-{secrets.token_hex(6)}"
    h = hashlib.sha256()
    current = 0
    status_id = f"downloading {redact(url)}"
    length = resp.headers.get("Content-Length") or ""
    total = int(length) if length.isdigit() else 0
    etag = resp.headers.get("ETag") or ""
    validator = etag if etag.startswith('"') else resp.headers.get("Last-Modified") or ""
    reopen = range_reopen(_http(), resp.url, {"User-Agent": "workbench"}, validator)
    body = resumable(resp, reopen, size=total if length.isdigit() and validator else -1, chunk=_CHUNK)
    last = 0.0
    try:
        with open(tmp, "wb") as f:
            for chunk in body:
                if job.cancel.is_set():
                    raise SolveError("canceled", v)
                f.write(chunk)
                h.update(chunk)
                current += len(chunk)
                now = time.monotonic()
                if now - last > 0.1:
                    last = now
                    job.bus.emit(VertexStatus(v.digest, v.name, status_id=status_id, current=current, total=total))
    except HttpError as e:
        tmp.unlink(missing_ok=True)
        raise _failed(url, e, v) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        body.close()
    job.bus.emit(VertexStatus(v.digest, v.name, status_id=status_id, current=current,
                                 total=max(total, current), done=True))
    return "sha256:" + h.hexdigest(), tmp


def _get(job: SolveJob, v: Vertex, op: HttpSource, store: _Store, headers: dict[str, str]) -> _HttpResolved | str:
    """GET with `headers`: a 200's body goes into the store (and its ETag into the URL's entries); a 304
    returns the ETag it names ("" when it names none)."""
    with _open(op.url, v, headers) as resp:
        info = resp.headers
        if resp.status == 304:
            return _etag_value(info.get("ETag", ""))
        digest, tmp = _download(job, v, op.url, resp, store.root / "sha256")
    os.replace(tmp, store.blob(digest))
    disposition = info.get("Content-Disposition", "")
    resolved = _HttpResolved(digest, http_filename(op.url, op.filename, disposition), info.get("Last-Modified", ""))
    if etag := _etag_value(info.get("ETag", "")):
        store.add_entry(op.url, {"etag": etag, "digest": digest, "last_modified": resolved.last_modified,
                                 "content_disposition": disposition})
    return resolved


def _http_key(worker: Worker, job: SolveJob, v: Vertex, op: HttpSource) -> str:
    if urllib.parse.urlsplit(op.url).scheme.lower() not in ("http", "https"):
        raise SolveError(f"unsupported URL {redact(op.url)}: only http and https are downloaded", v)
    if op.checksum:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", op.checksum):
            raise SolveError(f"invalid checksum {op.checksum!r}: expected sha256:<64 hex digits>", v)
        return "http-checksum:" + op.checksum
    store = _Store(worker.root / "http")
    with store.lock(op.url):
        entries = {e["etag"]: e for e in store.entries(op.url)}
        headers = {"If-None-Match": ", ".join(entries)} if entries else {}
        got = _get(job, v, op, store, headers)
        if isinstance(got, str):  # 304: content we have; without an ETag it can only mean the one we sent
            entry = entries.get(got or (next(iter(entries)) if len(entries) == 1 else ""))
            if entry is None:
                raise SolveError(f"failed to download {redact(op.url)}: invalid not-modified ETag: {got!r}", v)
            got = _HttpResolved(entry["digest"], http_filename(op.url, op.filename, entry["content_disposition"]),
                                entry["last_modified"])
    job.remember(v, got)
    parts = {"digest": got.digest, "filename": got.filename, "last_modified": got.last_modified}
    return "http:" + json.dumps(parts, sort_keys=True)


def _http_fetch(worker: Worker, job: SolveJob, v: Vertex, op: HttpSource) -> str:
    store = _Store(worker.root / "http")
    resolved = job.recall(v)
    expected = op.checksum or (resolved.digest if isinstance(resolved, _HttpResolved) else "")
    if not isinstance(resolved, _HttpResolved) or not store.blob(resolved.digest).is_file():
        got = _get(job, v, op, store, {})
        if isinstance(got, str):
            raise SolveError(f"failed to download {redact(op.url)}: unexpected response status 304", v)
        if expected and got.digest != expected:
            raise SolveError(f"digest mismatch {got.digest}: {expected}", v)
        resolved = got
    with worker.snapshots.prepare() as prepared:
        dest = prepared / "fs" / resolved.filename
        shutil.copyfile(store.blob(resolved.digest), dest)
        os.chmod(dest, op.mode if op.mode is not None else 0o600)
        if os.geteuid() == 0:
            os.lchown(dest, 0, 0)
        mtime = 0.0
        if resolved.last_modified:
            with contextlib.suppress(TypeError, ValueError):
                mtime = email.utils.parsedate_to_datetime(resolved.last_modified).timestamp()
        os.utime(dest, (mtime, mtime))
        return worker.snapshots.commit(prepared)


# -- git --------------------------------------------------------------------------------------------


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def _git(job: SolveJob, v: Vertex, args: list[str], log: bool = False,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git; `log` forwards its stderr (fetch progress, "From …" lines) as the vertex's output."""
    cmd = ["git", "-c", "init.defaultBranch=master", "-c", "advice.detachedHead=false", "-c", "gc.auto=0", *args]
    try:
        proc = subprocess.run(cmd, env=_git_env(), capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SolveError(f"git {args[0]}: {e}", v) from None
    if log and proc.stderr:
        job.bus.emit(VertexLog(v.digest, v.name, stream=2, data=proc.stderr.encode()))
    if check and proc.returncode != 0:
        raise SolveError(f"git {' '.join(_redact_args(args))} failed: {_tail(proc.stderr)}", v)
    return proc


def _redact_args(args: list[str]) -> list[str]:
    return [redact(a) for a in args]


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def _is_sha(ref: str) -> bool:
    return _SHA_RE.fullmatch(ref) is not None


def _resolve_ref(job: SolveJob, v: Vertex, op: GitSource) -> _GitResolved:
    ref = op.ref.strip()
    if _is_sha(ref):
        return _GitResolved(ref, "")
    proc = _git(job, v, ["ls-remote", "--", op.remote, ref or "HEAD"], check=False)
    if proc.returncode != 0:
        raise SolveError(f"failed to resolve {ref or 'HEAD'} in {redact(op.remote)}: {_tail(proc.stderr)}", v)
    refs: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    if not ref or ref == "HEAD":
        candidates = [("HEAD", "")]
    elif ref.startswith("refs/"):
        candidates = [(ref + "^{}", ref), (ref, ref)]
    else:
        candidates = [(f"refs/heads/{ref}", f"refs/heads/{ref}"), (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"),
                      (f"refs/tags/{ref}", f"refs/tags/{ref}")]
    for name, full in candidates:
        if name in refs:
            return _GitResolved(refs[name], full)
    raise SolveError(f"repository {redact(op.remote)} does not contain ref {ref or 'HEAD'}", v)


def _git_key(job: SolveJob, v: Vertex, op: GitSource) -> str:
    resolved = _resolve_ref(job, v, op)
    job.remember(v, resolved)
    return "git:" + resolved.sha


def _has_commit(job: SolveJob, v: Vertex, repo: Path, sha: str) -> bool:
    return _git(job, v, ["--git-dir", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"], check=False).returncode == 0


def _update_cache_repo(job: SolveJob, v: Vertex, op: GitSource, repo: Path, resolved: _GitResolved) -> None:
    """Make sure the bare cache repo holds `resolved.sha` (and the ref it came from), pinned against gc."""
    if not (repo / "HEAD").is_file():
        _git(job, v, ["init", "-q", "--bare", str(repo)])
    gd = ["--git-dir", str(repo)]
    sha = resolved.sha
    if not _has_commit(job, v, repo, sha):
        job.bus.emit(VertexStatus(v.digest, v.name, status_id=f"fetching {redact(op.remote)}"))
        target = f"+{resolved.ref}:{resolved.ref}" if resolved.ref else sha
        # Shallow first (cheap for big repos); dumb-HTTP servers and servers refusing a sha need a full fetch.
        tries = [[*gd, "fetch", "--depth=1", "--no-tags", "--", op.remote, target],
                 [*gd, "fetch", "--no-tags", "--", op.remote, target]]
        full = [*gd, "fetch", "--tags", "--", op.remote, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
        if (repo / "shallow").exists():
            full.insert(len(gd) + 1, "--unshallow")
        tries.append(full)
        stderr = ""
        for args in tries:
            proc = _git(job, v, args, check=False)
            stderr = proc.stderr
            if proc.returncode == 0 and _has_commit(job, v, repo, sha):
                if proc.stderr:  # "From <remote>" and the refs it got; a failed try's stderr is not news
                    job.bus.emit(VertexLog(v.digest, v.name, stream=2, data=proc.stderr.encode()))
                break
        else:
            raise SolveError(f"failed to fetch {resolved.ref or sha} from {redact(op.remote)}: {_tail(stderr)}", v)
        job.bus.emit(VertexStatus(v.digest, v.name, status_id=f"fetching {redact(op.remote)}", done=True))
    _git(job, v, [*gd, "update-ref", f"refs/workbench/{sha}", sha])


def _checkout(job: SolveJob, v: Vertex, op: GitSource, repo: Path, resolved: _GitResolved, work: Path,
              keep: bool) -> None:
    """A working tree of the commit in `work`; with `keep` a self-contained .git (origin = the remote)."""
    _git(job, v, ["init", "-q", str(work)])
    wd = ["-C", str(work)]
    sha = resolved.sha
    if keep:
        # only the pinned commit is fetched: the shared cache repo may lack the branch or tag ref itself
        # (another build fetched the same commit under another name), so the ref is recreated locally
        refspecs = [f"+refs/workbench/{sha}:refs/workbench/{sha}"]
        _git(job, v, [*wd, "fetch", "-q", "--no-tags", "--update-shallow", "--", str(repo), *refspecs])
        if resolved.ref.startswith(("refs/heads/", "refs/tags/")):
            _git(job, v, [*wd, "update-ref", resolved.ref, sha])
        _git(job, v, [*wd, "update-ref", "-d", f"refs/workbench/{sha}"])
    else:  # the .git is thrown away: borrow the cache repo's objects instead of copying them
        (work / ".git" / "objects" / "info" / "alternates").write_text(str(repo / "objects") + "\n")
    _git(job, v, [*wd, "checkout", "-q", "--detach", sha])
    _git(job, v, [*wd, "remote", "add", "origin", op.remote])
    if (work / ".gitmodules").is_file():
        job.bus.emit(VertexStatus(v.digest, v.name, status_id="updating submodules"))
        sub = [*wd, "-c", "protocol.file.allow=always", "submodule", "update", "--init", "--recursive"]
        if _git(job, v, [*sub, "--depth=1"], log=True, check=False).returncode != 0:
            _git(job, v, sub, log=True)
        job.bus.emit(VertexStatus(v.digest, v.name, status_id="updating submodules", done=True))
    if keep:
        _git(job, v, [*wd, "reflog", "expire", "--all", "--expire=now"])
        (work / ".git" / "FETCH_HEAD").unlink(missing_ok=True)


def _subdir(op: GitSource, v: Vertex) -> str:
    sub = posixpath.normpath("/" + op.subdir).lstrip("/")
    if sub.startswith(".."):
        raise SolveError(f"invalid subdir {op.subdir!r}", v)
    return "" if sub == "." else sub


def _chown_tree(root: Path) -> None:
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), 0, 0)


def _git_fetch(worker: Worker, job: SolveJob, v: Vertex, op: GitSource) -> str:
    resolved = job.recall(v)
    if not isinstance(resolved, _GitResolved):
        resolved = _resolve_ref(job, v, op)
    sub = _subdir(op, v)
    keep = op.keep_git_dir and not sub  # BuildKit keeps .git only for a checkout of the whole repo
    name = hashlib.sha256(op.remote.encode()).hexdigest()
    repo = worker.root / "git" / name
    with worker.snapshots.prepare() as prepared:
        fs = prepared / "fs"
        work = fs if keep else worker.snapshots.tmp / f"git-{secrets.token_hex(6)}"
        try:
            with _flock(worker.root / "git" / f"{name}.lock"):
                _update_cache_repo(job, v, op, repo, resolved)
                _checkout(job, v, op, repo, resolved, work, keep)
            if not keep:
                src = work / sub if sub else work
                if src.is_symlink() or not src.exists():
                    raise SolveError(f"subdir {op.subdir!r} not found in {redact(op.remote)} at {resolved.sha}", v)
                if src.is_dir():
                    for entry in os.listdir(src):
                        if not (src == work and entry == ".git"):
                            os.rename(src / entry, fs / entry)
                else:
                    os.rename(src, fs / src.name)
                for dirpath, dirnames, filenames in os.walk(fs):  # submodules' .git files point nowhere now
                    for gitname in [n for n in dirnames + filenames if n == ".git"]:
                        path = Path(dirpath) / gitname
                        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                        if gitname in dirnames:
                            dirnames.remove(gitname)
        finally:
            if not keep and work.exists():
                shutil.rmtree(work, ignore_errors=True)
        os.chmod(fs, 0o755)
        _chown_tree(fs)
        return worker.snapshots.commit(prepared)
