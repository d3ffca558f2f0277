"""The emulator's state: cache entries (committed, or reserved with an upload going on), how keys are
looked up and reserved (a stale reservation is taken over), and the faults to inject."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.gha import params
from workbench.gha.params import BadParam

AZURE_VERSION = "2024-11-04"
URL_TTL = 3600.0
MAX_ENTRY = 10 << 30  # GitHub's cache limit per repository: no entry can be larger
RESERVATION_TIMEOUT = 60.0


@dataclass
class Entry:
    id: int
    key: str
    version: str
    scope: str
    blob: str
    created: float
    size: int = -1
    committed: bool = False
    accessed: float = 0.0
    limit: int = MAX_ENTRY
    """The most bytes the entry may hold (v1: the reserved cacheSize)."""
    touched: float = 0.0
    """When its upload last wrote something (a reservation idle too long can be taken over)."""
    ranges: list[tuple[int, int]] = field(default_factory=list)
    """The byte ranges [start, end) a v1 upload wrote."""


@dataclass
class Faults:
    throttle: int = 0
    fail_writes: bool = False
    truncate_downloads: str = ""
    """Entries whose key starts with this are served half ("" off, "*" all)."""
    expire_urls: bool = False
    slow_uploads: float = 0.0

    def update(self, spec: dict[str, Any]) -> None:
        for k, v in spec.items():
            name = k.replace("-", "_")
            if name == "throttle":
                self.throttle = params.json_integer(k, v, 0, 1_000_000)
            elif name == "slow_uploads":
                if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 3600:
                    raise BadParam(k, f"{v!r} is not a number of seconds from 0 to 3600")
                self.slow_uploads = float(v)
            elif name == "truncate_downloads":
                self.truncate_downloads = "*" if v is True else str(v or "")
            elif name in ("fail_writes", "expire_urls"):
                setattr(self, name, bool(v))
            else:
                raise BadParam(k, "unknown fault (throttle, fail-writes, truncate-downloads, expire-urls, "
                                  "slow-uploads)")


def parse_fault(text: str) -> dict[str, Any]:
    """`throttle=3`, `fail-writes`, `truncate-downloads`, `expire-urls`, `slow-uploads=2` → a Faults.update()
    dict."""
    name, eq, value = text.partition("=")
    if name == "throttle":
        if not eq or not value.isdigit():
            raise ValueError(f"--fault {text!r}: want throttle=N")
        return {"throttle": int(value)}
    if name == "slow-uploads":
        if not eq or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
            raise ValueError(f"--fault {text!r}: want slow-uploads=SECONDS")
        return {name: float(value)}
    if name == "truncate-downloads":
        return {name: value if eq else "*"}
    if name in ("fail-writes", "expire-urls") and not eq:
        return {name: True}
    raise ValueError(f"--fault {text!r}: unknown fault "
                     "(throttle=N, fail-writes, truncate-downloads[=KEY-PREFIX], expire-urls, slow-uploads=SECONDS)")


@dataclass
class State:
    data: Path
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    entries: list[Entry] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    stats: dict[str, int] = field(default_factory=dict)
    expired_once: set[int] = field(default_factory=set)
    next_id: int = 1
    reservation_timeout: float = RESERVATION_TIMEOUT

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def blob_path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise BadParam("blob", "not a blob name")
        return self.data / "blobs" / name

    def sign(self, name: str, perms: str, ttl: float = URL_TTL) -> str:
        expiry = int(time.time() + ttl)
        return f"sv={AZURE_VERSION}&sr=b&sp={perms}&se={expiry}&sig={self.signature(name, perms, str(expiry))}"

    def signature(self, name: str, perms: str, expiry: str) -> str:
        return hmac.new(self.secret, f"{name}\n{perms}\n{expiry}".encode(), hashlib.sha256).hexdigest()

    def find(self, scopes: list[str], keys: list[str], version: str) -> Entry | None:
        """GitHub's lookup: exact key, then newest prefix match, scope by scope."""
        for scope in scopes:
            live = [e for e in self.entries if e.committed and e.scope == scope and e.version == version]
            for key in keys:
                for e in live:
                    if e.key == key:
                        return e
            for key in keys:
                hits = [e for e in live if e.key.startswith(key)]
                if hits:
                    return max(hits, key=lambda e: (e.created, e.id))
        return None

    def reserve(self, scope: str, key: str, version: str, limit: int = MAX_ENTRY) -> Entry | None:
        """A new, uncommitted entry; None if the key (and version) exists in the scope, committed or with an
        upload still going. A reservation idle for `reservation_timeout` is dropped and reserved anew."""
        now = time.time()
        for e in self.entries:
            if e.scope == scope and e.key == key and e.version == version:
                if e.committed or now - e.touched < self.reservation_timeout:
                    return None
                self.drop(e)
                self.count("reservations.taken-over")
                break
        entry = Entry(self.next_id, key, version, scope, uuid.uuid4().hex, now, limit=limit, touched=now)
        self.next_id += 1
        self.entries.append(entry)
        return entry

    def drop(self, entry: Entry) -> None:
        """Forget an unfinished entry and whatever its upload left."""
        self.entries.remove(entry)
        blocks = self.data / "blocks"
        for path in (blocks / f"v1-{entry.blob}", blocks / f"{entry.blob}.tmp", self.blob_path(entry.blob)):
            path.unlink(missing_ok=True)
        shutil.rmtree(blocks / entry.blob, ignore_errors=True)

    def uploading(self, blob: str) -> Entry | None:
        """The unfinished entry a blob belongs to."""
        return next((e for e in self.entries if e.blob == blob and not e.committed), None)

    def live(self, entry: Entry) -> bool:
        """Whether an upload to `entry` may go on (noting that it did)."""
        if entry.committed or entry not in self.entries:
            return False
        entry.touched = time.time()
        return True


def covered(ranges: list[tuple[int, int]], size: int) -> int:
    """The first byte below `size` that no range covers (`size` when all are)."""
    at = 0
    for start, end in sorted(ranges):
        if start > at:
            break
        at = max(at, end)
    return min(at, size)
