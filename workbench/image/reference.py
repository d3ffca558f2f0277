"""Image references ("busybox", "localhost:5055/app:1.0", "repo@sha256:...") with docker's normalisation."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", DOCKER_HUB}

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
_REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_NAME_MAX = 255


class InvalidReference(ValueError):
    """The string is not a valid image reference."""


@dataclass(frozen=True)
class Reference:
    """A normalised image reference; `registry` is the host to talk to ("registry-1.docker.io" for Docker Hub)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The familiar full name without tag or digest, e.g. "docker.io/library/busybox"."""
        domain = "docker.io" if self.registry in _HUB_ALIASES else self.registry
        return f"{domain}/{self.repository}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(s: str) -> Reference:
    """Parse and normalise `s` like docker does: Docker Hub by default, "library/" for short names, tag "latest"."""
    if not s:
        raise InvalidReference("invalid reference format: empty image reference")
    if _HEX64.match(s):
        raise InvalidReference(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    # docker decides the domain before validating case: a first component with '.', ':' or 'localhost' or
    # upper case letters is a host name
    first, sep, rest = s.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        domain, remainder = first, rest
    else:
        domain, remainder = "docker.io", s
    m = _REFERENCE_RE.match(f"{domain}/{remainder}")
    if m is None:
        name_part = remainder.split("@", 1)[0].rsplit(":", 1)[0] if ":" in remainder.split("/")[-1] else remainder
        if name_part.lower() != name_part and _REFERENCE_RE.match(f"{domain}/{remainder.lower()}"):
            raise InvalidReference(f"invalid reference format: repository name ({name_part}) must be lowercase: {s!r}")
        raise InvalidReference(f"invalid reference format: {s!r}")
    repository = m.group("name")[len(domain) + 1:]
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in repository:
            repository = "library/" + repository
    if len(m.group("name")) > _NAME_MAX:
        raise InvalidReference(f"invalid reference format: repository name must not be more than {_NAME_MAX} "
                               f"characters: {s!r}")
    tag, digest = m.group("tag"), m.group("digest")
    if digest is not None:
        algo, _, hexd = digest.partition(":")
        if algo == "sha256" and not _HEX64.match(hexd):
            raise InvalidReference(f"invalid digest in {s!r}: sha256 needs 64 lower-case hex characters")
    elif tag is None:
        tag = "latest"
    return Reference(domain, repository, tag, digest)
