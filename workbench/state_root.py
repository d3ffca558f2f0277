"""The state root (`--root`) is its owner's alone: mode 0700, owned by the user running workbench.

Snapshots hold files a Dockerfile chose (set-uid binaries, device nodes from layers) and a running step's
bundle holds its environment (secrets passed with `RUN --mount=type=secret,env=…`), so no other user may
reach anything below the root: the root itself is the boundary, as BuildKit keeps its own root 0700.
`prepare_root` creates a root that way, tightens an existing root left readable by others (saying so in one
line), and refuses a root that belongs to another user (a directory someone else made could hold links
that send our writes anywhere).
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600

_STATE_DIRS = ("snapshots", "tmp", "history", "content", "leases", "locks", "why", "cachemounts")
_STATE_NAMES = frozenset(_STATE_DIRS) | {"context-hashes", "debug-history", "empty-context",
                                         "images.json", "images.lock", "lock", "git", "http", "urls"}

_prepared: set[str] = set()
_lock = threading.Lock()


class RootError(Exception):
    """The state root cannot be used safely (another user's directory, not a directory, not creatable)."""


def _notice(message: str) -> None:
    print(f"workbench: {message}", file=sys.stderr)


def prepare_root(root: Path, notice: Callable[[str], None] = _notice) -> Path:
    """Create `root` private (0700), or check and tighten an existing one; returns it as an absolute path.

    Done once per process and root. Raises RootError when the root is not ours to use.
    """
    root = Path(os.path.abspath(root))
    key = str(root)
    with _lock:
        if key in _prepared:
            return root
        _prepare(root, notice)
        _prepared.add(key)
    return root


def _prepare(root: Path, notice: Callable[[str], None]) -> None:
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(root, _PRIVATE_DIR)
        os.chmod(root, _PRIVATE_DIR)  # mkdir's mode passes through the umask
        _create_entries(root)
        return
    except FileExistsError:
        pass
    except OSError as e:
        raise RootError(f"cannot create the state root {root}: {e.strerror}") from None
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode):
        # A link is fine only when it is ours and points at a directory of ours (another user's link in /tmp
        # could send us to /etc, whose files we would then make private).
        if st.st_uid != os.geteuid():
            raise RootError(f"the state root {root} is a symbolic link owned by uid {st.st_uid}, not by you: "
                            "use a root of your own (--root DIR or $WORKBENCH_ROOT)")
        st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise RootError(f"the state root {root} is not a directory")
    if st.st_uid != os.geteuid():
        raise RootError(f"the state root {root} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}): "
                        "use a root of your own (--root DIR or $WORKBENCH_ROOT)")
    loose = stat.S_IMODE(st.st_mode) & 0o077
    _check_entries(root, opened=bool(loose))
    tightened = _tighten_entries(root)
    if loose:
        os.chmod(root, _PRIVATE_DIR)
        tightened += _tighten_below(root)
        notice(f"state root {root} was open to other users (mode {stat.S_IMODE(st.st_mode):04o}): "
               f"made it 0700{f' and {tightened} entries below it private' if tightened else ''}")
    _create_entries(root)


def _create_entries(root: Path) -> None:
    """Create the root's usual entries private from the start (SQLite gives cache.db's -wal and -shm files
    the database file's mode)."""
    for name in _STATE_DIRS:
        try:
            os.mkdir(root / name, _PRIVATE_DIR)
        except FileExistsError:
            pass
    try:
        os.close(os.open(root / "cache.db", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _PRIVATE_FILE))
    except FileExistsError:
        pass


def _tighten_below(root: Path) -> int:
    """Once, when an open root is made private: workbench's state below it too (never layer contents)."""
    return make_private(p for p in state_entries(root) if len(p.relative_to(root).parts) > 1)


def make_private(paths: Iterable[Path]) -> int:
    """Take the group and other bits off each of `paths` (gone ones are skipped); returns how many changed."""
    changed = 0
    for path in paths:
        try:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, mode & ~0o077)
            changed += 1
    return changed


def _check_entries(root: Path, opened: bool) -> None:
    """Refuse a root whose own entries someone else could have planted: a link or another user's entry in
    place of `snapshots`, `tmp`, … would send snapshots and secrets there. A root that was open to others
    must hold nothing but workbench's own entries before it is made private (`--root ~` must not chmod ~)."""
    for name in os.listdir(root):
        try:
            st = os.lstat(root / name)
        except FileNotFoundError:
            continue  # gone meanwhile (a concurrent build's cache.db-wal)
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else f"owned by uid {st.st_uid}"
            raise RootError(f"the state root {root} holds {name!r}, {what}: someone else may have put it there; "
                            "remove it or use a new root (--root DIR)")
        if opened and not _is_state_entry(name):
            raise RootError(f"the state root {root} is open to other users and holds {name!r}, which workbench "
                            "did not make: use an empty directory or a workbench root (--root DIR)")


def _is_state_entry(name: str) -> bool:
    return name in _STATE_NAMES or name.startswith("cache.db") or name.startswith(".") and name.endswith(".tmp")


def _tighten_entries(root: Path) -> int:
    """Make workbench's own entries directly under the root private; returns how many changed.

    Nothing deeper is touched: snapshot contents keep the modes the image gives them."""
    changed = 0
    for name in os.listdir(root):
        if not _is_state_entry(name):
            continue  # not ours to change (a root in a folder that holds other things too)
        try:
            st = os.lstat(root / name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o077:
            continue
        os.chmod(root / name, _PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else _PRIVATE_FILE)
        changed += 1
    return changed


def is_private(root: Path) -> bool:
    """Whether `root` is a directory of ours that no other user can enter."""
    try:
        st = os.stat(root)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not stat.S_IMODE(st.st_mode) & 0o077



def write_private(path: Path, data: bytes | str) -> None:
    """Write `path` whole and atomically (a temp file renamed over it), readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, _PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def make_private_dir(path: Path) -> None:
    """Create `path` and its missing parents with mode 0700 (`mkdir(parents=True)` would make the parents
    with the umask's mode); an existing one is left as it is."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for p in reversed(missing):
        p.mkdir(mode=_PRIVATE_DIR, exist_ok=True)


def state_entries(root: Path, limit: int = 50_000) -> Iterator[Path]:
    """Entries below `root` that must be private: workbench's own state, not the contents of layers
    (`snapshots/<id>/…`), cache mounts (`cachemounts/<key>/<n>/…`) or ADD sources (`git/…`, `http/…`),
    which keep the modes builds gave them, nor deeper than a step's bundle files in `tmp`; mount points are
    not crossed. At most `limit` entries are looked at (a huge root is sampled, not walked to the end)."""
    dev = os.lstat(root).st_dev
    stack = [root]
    seen = 0
    while stack and seen < limit:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            seen += 1
            p = Path(e.path)
            rel = p.relative_to(root).parts
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) or st.st_dev != dev or rel == ("snapshots", "empty"):
                continue  # the empty lower dir is a layer's root: its mode is the image's, as fs/ below <id>
            if rel[0] == "cachemounts" and len(rel) == 3 and rel[2].isdigit():
                continue  # a cache mount's own root: its mode is the mount's (mode=, default 0755)
            yield p
            # git checkouts and downloads (ADD sources) are content too: their modes reach images
            deep = {"snapshots": 2, "cachemounts": 3, "tmp": 3, "git": 1, "http": 1}.get(rel[0])
            if stat.S_ISDIR(st.st_mode) and (deep is None or len(rel) < deep):
                stack.append(p)
