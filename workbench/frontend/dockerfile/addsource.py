"""What an ADD source is: a git repository, an HTTP(S) URL, or a local path (BuildKit's gitutil rules)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.+-]+@[^/:]+:(?!//)")


@dataclass(frozen=True)
class GitRef:
    remote: str
    ref: str = ""
    subdir: str = ""


def parse_git_ref(src: str) -> GitRef | None:
    """A git source like `https://host/repo.git#ref:dir`, `git@host:repo.git`, `git://…`, `ssh://…`; else None.

    HTTP(S) URLs count as git only when their path ends in `.git`; `github.com/…` without a scheme is a
    local path to ADD, as in BuildKit.
    """
    if src.startswith(("./", "../")):
        return None
    remote, _, fragment = src.partition("#")
    if remote.startswith(("git://", "ssh://")) or _SCP_LIKE.match(remote):
        pass
    elif remote.startswith(("http://", "https://")):
        if not urlsplit(remote).path.endswith(".git"):
            return None
    else:
        return None
    ref, _, subdir = fragment.partition(":")
    return GitRef(remote, ref, subdir)


def is_http_source(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def url_filename(url: str) -> str:
    """The file name ADD gives a URL's content: the last path segment, else `__unnamed__`."""
    path = urlsplit(url).path
    if path and path != "/":
        base = posixpath.basename(path.rstrip("/"))
        if base not in ("", ".", "/"):
            return base
    return "__unnamed__"
