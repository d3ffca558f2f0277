"""Image references, normalised as docker does (`busybox` → `docker.io/library/busybox:latest`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "registry-1.docker.io"
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


class InvalidReference(ValueError):
    pass


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        host = "docker.io" if self.registry == DOCKER_HUB else self.registry
        name = f"{host}/{self.repository}"
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name


def parse_reference(text: str) -> Reference:
    name, digest = text, None
    if "@" in name:
        name, digest = name.split("@", 1)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise InvalidReference(f"invalid reference format: {text!r} (bad digest)")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid reference format: {text!r} (bad tag)")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repo = first, rest
    else:
        registry, repo = DOCKER_HUB, name
        if "/" not in repo:
            repo = "library/" + repo
    if registry == "docker.io":
        registry = DOCKER_HUB
    if not _REPO.match(repo):
        raise InvalidReference(f"invalid reference format: {text!r} (repository name must be lowercase)")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repo, tag, digest)
