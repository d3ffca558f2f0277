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
import http.client
import json
import os
import posixpath
import re
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.llb.ops import GitSource, HttpSource, Vertex
from workbench.progress.events import VertexLog, VertexStatus
from workbench.state_root import make_private_dir

if TYPE_CHECKING:
    from workbench.solver.solver import Solver

_CHUNK = 1 << 16
_TIMEOUT = 60
_MAX_ETAGS = 8
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _error(message: str, v: Vertex) -> Exception:
    from workbench.solver.solver import SolveError

    return SolveError(message, v)


def redact(url: str) -> str:
    """`url` without a password (user:pass@host → user:xxxxx@host), for messages."""
    parts = urllib.parse.urlsplit(url) if "://" in url else None
    if parts is None or parts.password is None:
        return url
    netloc = f"{parts.username}:xxxxx@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class _HttpResolved:
    digest: str  # "sha256:…" of the content
    filename: str
    last_modified: str  # the Last-Modified header as sent, or ""


@dataclass(frozen=True)
class _GitResolved:
    sha: str
    ref: str  # the full ref name it came from (refs/heads/…, refs/tags/…), "" for a sha


# What source_key resolved, per solver and vertex digest, so fetch uses exactly what was keyed.
_resolved: weakref.WeakKeyDictionary[Solver, dict[str, _HttpResolved | _GitResolved]] = weakref.WeakKeyDictionary()
_resolved_lock = threading.Lock()


def _remember(solver: Solver, v: Vertex, value: _HttpResolved | _GitResolved) -> None:
    with _resolved_lock:
        _resolved.setdefault(solver, {})[v.digest] = value


def _recall(solver: Solver, v: Vertex) -> _HttpResolved | _GitResolved | None:
    with _resolved_lock:
        return _resolved.get(solver, {}).get(v.digest)


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


def source_key(solver: Solver, v: Vertex) -> str:
    """The part of `v`'s cache key that stands for the remote content."""
    if isinstance(v.op, HttpSource):
        return _http_key(solver, v, v.op)
    if isinstance(v.op, GitSource):
        return _git_key(solver, v, v.op)
    raise _error(f"not a remote source: {type(v.op).__name__}", v)


def fetch(solver: Solver, v: Vertex) -> list[str]:
    """Fetch the remote content into a new snapshot; returns the chain."""
    if isinstance(v.op, HttpSource):
        return [_http_fetch(solver, v, v.op)]
    if isinstance(v.op, GitSource):
        return [_git_fetch(solver, v, v.op)]
    raise _error(f"not a remote source: {type(v.op).__name__}", v)


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


def _open(url: str, v: Vertex, headers: dict[str, str]) -> http.client.HTTPResponse | urllib.error.HTTPError:
    """GET `url`: the response, or for a 304 the HTTPError urllib raises; other failures raise a SolveError."""
    req = urllib.request.Request(url, headers={"User-Agent": "workbench", **headers})
    try:
        resp: http.client.HTTPResponse = urllib.request.urlopen(req, timeout=_TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 304:
            return e
        e.close()
        raise _error(f"failed to download {redact(url)}: invalid response status {e.code}", v) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise _error(f"failed to download {redact(url)}: {reason}", v) from None
    return resp


def _download(solver: Solver, v: Vertex, url: str, resp: http.client.HTTPResponse, dest_dir: Path) -> tuple[str, Path]:
    """Stream the body into a temp file under `dest_dir` while hashing it; returns (digest, temp path)."""
    make_private_dir(dest_dir)
    tmp = dest_dir / f".download-{secrets.token_hex(6)}"
    h = hashlib.sha256()
    current = 0
    status_id = f"downloading {redact(url)}"
    length = resp.headers.get("Content-Length") or ""
    total = int(length) if length.isdigit() else 0
    last = 0.0
    try:
        with open(tmp, "wb") as f:
            while True:
                if solver.cancel.is_set():
                    raise _error("canceled", v)
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                h.update(chunk)
                current += len(chunk)
                now = time.monotonic()
                if now - last > 0.1:
                    last = now
                    solver.bus.emit(VertexStatus(v.digest, v.name, status_id=status_id, current=current, total=total))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    solver.bus.emit(VertexStatus(v.digest, v.name, status_id=status_id, current=current,
                                 total=max(total, current), done=True))
    return "sha256:" + h.hexdigest(), tmp


def _get(solver: Solver, v: Vertex, op: HttpSource, store: _Store, headers: dict[str, str]) -> _HttpResolved | str:
    """GET with `headers`: a 200's body goes into the store (and its ETag into the URL's entries); a 304
    returns the ETag it names ("" when it names none)."""
    resp = _open(op.url, v, headers)
    with contextlib.closing(resp):
        info = resp.headers
        if isinstance(resp, urllib.error.HTTPError):  # 304
            return _etag_value(info.get("ETag", "") if info else "")
        digest, tmp = _download(solver, v, op.url, resp, store.root / "sha256")
    os.replace(tmp, store.blob(digest))
    disposition = info.get("Content-Disposition", "")
    resolved = _HttpResolved(digest, http_filename(op.url, op.filename, disposition), info.get("Last-Modified", ""))
    if etag := _etag_value(info.get("ETag", "")):
        store.add_entry(op.url, {"etag": etag, "digest": digest, "last_modified": resolved.last_modified,
                                 "content_disposition": disposition})
    return resolved


def _http_key(solver: Solver, v: Vertex, op: HttpSource) -> str:
    if urllib.parse.urlsplit(op.url).scheme.lower() not in ("http", "https"):
        raise _error(f"unsupported URL {redact(op.url)}: only http and https are downloaded", v)
    if op.checksum:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", op.checksum):
            raise _error(f"invalid checksum {op.checksum!r}: expected sha256:<64 hex digits>", v)
        return "http-checksum:" + op.checksum
    store = _Store(solver.root / "http")
    with store.lock(op.url):
        entries = {e["etag"]: e for e in store.entries(op.url)}
        headers = {"If-None-Match": ", ".join(entries)} if entries else {}
        got = _get(solver, v, op, store, headers)
        if isinstance(got, str):  # 304: content we have; without an ETag it can only mean the one we sent
            entry = entries.get(got or (next(iter(entries)) if len(entries) == 1 else ""))
            if entry is None:
                raise _error(f"failed to download {redact(op.url)}: invalid not-modified ETag: {got!r}", v)
            got = _HttpResolved(entry["digest"], http_filename(op.url, op.filename, entry["content_disposition"]),
                                entry["last_modified"])
    _remember(solver, v, got)
    parts = {"digest": got.digest, "filename": got.filename, "last_modified": got.last_modified}
    return "http:" + json.dumps(parts, sort_keys=True)


def _http_fetch(solver: Solver, v: Vertex, op: HttpSource) -> str:
    store = _Store(solver.root / "http")
    resolved = _recall(solver, v)
    expected = op.checksum or (resolved.digest if isinstance(resolved, _HttpResolved) else "")
    if not isinstance(resolved, _HttpResolved) or not store.blob(resolved.digest).is_file():
        got = _get(solver, v, op, store, {})
        if isinstance(got, str):
            raise _error(f"failed to download {redact(op.url)}: unexpected response status 304", v)
        if expected and got.digest != expected:
            raise _error(f"digest mismatch {got.digest}: {expected}", v)
        resolved = got
    with solver.snapshots.prepare() as prepared:
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
        return solver.snapshots.commit(prepared)


# -- git --------------------------------------------------------------------------------------------


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def _git(solver: Solver, v: Vertex, args: list[str], log: bool = False,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git; `log` forwards its stderr (fetch progress, "From …" lines) as the vertex's output."""
    cmd = ["git", "-c", "init.defaultBranch=master", "-c", "advice.detachedHead=false", "-c", "gc.auto=0", *args]
    try:
        proc = subprocess.run(cmd, env=_git_env(), capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise _error(f"git {args[0]}: {e}", v) from None
    if log and proc.stderr:
        solver.bus.emit(VertexLog(v.digest, v.name, stream=2, data=proc.stderr.encode()))
    if check and proc.returncode != 0:
        raise _error(f"git {' '.join(_redact_args(args))} failed: {_tail(proc.stderr)}", v)
    return proc


def _redact_args(args: list[str]) -> list[str]:
    return [redact(a) for a in args]


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def _is_sha(ref: str) -> bool:
    return _SHA_RE.fullmatch(ref) is not None


def _resolve_ref(solver: Solver, v: Vertex, op: GitSource) -> _GitResolved:
    ref = op.ref.strip()
    if _is_sha(ref):
        return _GitResolved(ref, "")
    proc = _git(solver, v, ["ls-remote", "--", op.remote, ref or "HEAD"], check=False)
    if proc.returncode != 0:
        raise _error(f"failed to resolve {ref or 'HEAD'} in {redact(op.remote)}: {_tail(proc.stderr)}", v)
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
    raise _error(f"repository {redact(op.remote)} does not contain ref {ref or 'HEAD'}", v)


def _git_key(solver: Solver, v: Vertex, op: GitSource) -> str:
    resolved = _resolve_ref(solver, v, op)
    _remember(solver, v, resolved)
    return "git:" + resolved.sha


def _has_commit(solver: Solver, v: Vertex, repo: Path, sha: str) -> bool:
    return _git(solver, v, ["--git-dir", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"], check=False).returncode == 0


def _update_cache_repo(solver: Solver, v: Vertex, op: GitSource, repo: Path, resolved: _GitResolved) -> None:
    """Make sure the bare cache repo holds `resolved.sha` (and the ref it came from), pinned against gc."""
    if not (repo / "HEAD").is_file():
        _git(solver, v, ["init", "-q", "--bare", str(repo)])
    gd = ["--git-dir", str(repo)]
    sha = resolved.sha
    if not _has_commit(solver, v, repo, sha):
        solver.bus.emit(VertexStatus(v.digest, v.name, status_id=f"fetching {redact(op.remote)}"))
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
            proc = _git(solver, v, args, check=False)
            stderr = proc.stderr
            if proc.returncode == 0 and _has_commit(solver, v, repo, sha):
                if proc.stderr:  # "From <remote>" and the refs it got; a failed try's stderr is not news
                    solver.bus.emit(VertexLog(v.digest, v.name, stream=2, data=proc.stderr.encode()))
                break
        else:
            raise _error(f"failed to fetch {resolved.ref or sha} from {redact(op.remote)}: {_tail(stderr)}", v)
        solver.bus.emit(VertexStatus(v.digest, v.name, status_id=f"fetching {redact(op.remote)}", done=True))
    _git(solver, v, [*gd, "update-ref", f"refs/workbench/{sha}", sha])


def _checkout(solver: Solver, v: Vertex, op: GitSource, repo: Path, resolved: _GitResolved, work: Path,
              keep: bool) -> None:
    """A working tree of the commit in `work`; with `keep` a self-contained .git (origin = the remote)."""
    _git(solver, v, ["init", "-q", str(work)])
    wd = ["-C", str(work)]
    sha = resolved.sha
    if keep:
        # only the pinned commit is fetched: the shared cache repo may lack the branch or tag ref itself
        # (another build fetched the same commit under another name), so the ref is recreated locally
        refspecs = [f"+refs/workbench/{sha}:refs/workbench/{sha}"]
        _git(solver, v, [*wd, "fetch", "-q", "--no-tags", "--update-shallow", "--", str(repo), *refspecs])
        if resolved.ref.startswith(("refs/heads/", "refs/tags/")):
            _git(solver, v, [*wd, "update-ref", resolved.ref, sha])
        _git(solver, v, [*wd, "update-ref", "-d", f"refs/workbench/{sha}"])
    else:  # the .git is thrown away: borrow the cache repo's objects instead of copying them
        (work / ".git" / "objects" / "info" / "alternates").write_text(str(repo / "objects") + "\n")
    _git(solver, v, [*wd, "checkout", "-q", "--detach", sha])
    _git(solver, v, [*wd, "remote", "add", "origin", op.remote])
    if (work / ".gitmodules").is_file():
        solver.bus.emit(VertexStatus(v.digest, v.name, status_id="updating submodules"))
        sub = [*wd, "-c", "protocol.file.allow=always", "submodule", "update", "--init", "--recursive"]
        if _git(solver, v, [*sub, "--depth=1"], log=True, check=False).returncode != 0:
            _git(solver, v, sub, log=True)
        solver.bus.emit(VertexStatus(v.digest, v.name, status_id="updating submodules", done=True))
    if keep:
        _git(solver, v, [*wd, "reflog", "expire", "--all", "--expire=now"])
        (work / ".git" / "FETCH_HEAD").unlink(missing_ok=True)


def _subdir(op: GitSource, v: Vertex) -> str:
    sub = posixpath.normpath("/" + op.subdir).lstrip("/")
    if sub.startswith(".."):
        raise _error(f"invalid subdir {op.subdir!r}", v)
    return "" if sub == "." else sub


def _chown_tree(root: Path) -> None:
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), 0, 0)


def _git_fetch(solver: Solver, v: Vertex, op: GitSource) -> str:
    resolved = _recall(solver, v)
    if not isinstance(resolved, _GitResolved):
        resolved = _resolve_ref(solver, v, op)
    sub = _subdir(op, v)
    keep = op.keep_git_dir and not sub  # BuildKit keeps .git only for a checkout of the whole repo
    name = hashlib.sha256(op.remote.encode()).hexdigest()
    repo = solver.root / "git" / name
    with solver.snapshots.prepare() as prepared:
        fs = prepared / "fs"
        work = fs if keep else solver.snapshots.tmp / f"git-{secrets.token_hex(6)}"
        try:
            with _flock(solver.root / "git" / f"{name}.lock"):
                _update_cache_repo(solver, v, op, repo, resolved)
                _checkout(solver, v, op, repo, resolved, work, keep)
            if not keep:
                src = work / sub if sub else work
                if src.is_symlink() or not src.exists():
                    raise _error(f"subdir {op.subdir!r} not found in {redact(op.remote)} at {resolved.sha}", v)
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
        return solver.snapshots.commit(prepared)
