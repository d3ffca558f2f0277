"""Records of the cache kept outside snapshots: `RUN --mount=type=cache` dirs, downloaded files and git repos."""

from __future__ import annotations

import json
import re
from pathlib import Path

from workbench.gc.model import Record
from workbench.gc.units import disk_usage


def short_id(text: str) -> str:
    """The id `du` shows for a key, digest or dir name."""
    return text.rsplit(":", 1)[-1][:25]


def dir_records(root: Path) -> list[Record]:
    """Cache mounts, downloaded files and git repos, one record each."""
    out: list[Record] = []
    mounts = root / "cachemounts"
    if mounts.is_dir():
        for d in sorted(mounts.iterdir()):
            if not d.is_dir():
                continue
            try:
                cache_id = (d / "id").read_text().strip()
                used = (d / "id").stat().st_mtime
            except OSError:
                cache_id, used = d.name, d.stat().st_mtime
            out.append(Record(short_id(d.name), "cachemount", f"cache mount {cache_id}", disk_usage(d), used,
                              path=d))
    http = root / "http" / "sha256"
    if http.is_dir():
        urls = _http_urls(root / "http" / "urls")
        for f in sorted(http.iterdir()):
            if f.name.startswith(".") or not f.is_file():
                continue
            url = urls.get("sha256:" + f.name, "")
            desc = f"http {url}" if url else f"http download sha256:{f.name[:12]}"
            st = f.stat()
            out.append(Record(short_id(f.name), "http", desc, st.st_blocks * 512, st.st_mtime, path=f))
    git = root / "git"
    if git.is_dir():
        for d in sorted(git.iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            used = max((p.stat().st_mtime for p in (d, d / "FETCH_HEAD", d / "HEAD") if p.exists()),
                       default=0.0)
            out.append(Record(short_id(d.name), "git", f"git repo {_git_url(d)}".rstrip(), disk_usage(d), used,
                              path=d))
    return out


def _http_urls(urls: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    if not urls.is_dir():
        return found
    for f in urls.glob("*.json"):
        try:
            data = json.loads(f.read_text())
            for e in data.get("entries", []):
                found.setdefault(str(e.get("digest", "")), str(data.get("url", "")))
        except (OSError, ValueError, AttributeError):
            continue
    return found


def _git_url(repo: Path) -> str:
    for config in (repo / "config", repo / ".git" / "config"):
        try:
            m = re.search(r"^\s*url\s*=\s*(.+)$", config.read_text(), re.MULTILINE)
        except OSError:
            continue
        if m:
            return m[1].strip()
    return ""
