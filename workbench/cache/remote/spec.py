"""`--cache-to` / `--cache-from` values (buildx syntax) and the backends they name.

`type=gha,url_v2=…,token=…,scope=…,mode=max,ignore-error=true` / `type=local,dest=DIR` / `type=local,src=DIR`.
`mode` and `ignore-error` belong to every exporter; the rest goes to the backend. For `type=gha` the
GitHub Actions environment fills in missing URLs and the token, as buildctl does (`loadGithubEnv`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from workbench.cache.remote import Backend, RemoteCacheError


class CacheSpecError(ValueError):
    """A `--cache-to` / `--cache-from` value that cannot be used; the message names the flag."""


@dataclass(frozen=True)
class CacheSpec:
    """One `--cache-to` or `--cache-from`: its type and attributes."""

    type: str
    attrs: dict[str, str] = field(default_factory=dict)
    export: bool = False

    @property
    def mode(self) -> str:
        return "max" if self.attrs.get("mode") == "max" else "min"  # invalid ⇒ min, as BuildKit

    @property
    def ignore_error(self) -> bool:
        return _parse_bool(self.attrs.get("ignore-error", "false")) is True

    def backend(self) -> Backend:
        return BACKENDS[self.type](self)


def _parse_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _local(spec: CacheSpec) -> Backend:
    from workbench.cache.remote.local import LocalBackend

    return LocalBackend(Path(spec.attrs["dest" if spec.export else "src"]), spec.attrs.get("tag") or "latest")


def _gha(spec: CacheSpec) -> Backend:
    from workbench.cache.remote.gha import GhaBackend

    return GhaBackend.from_attrs(spec.attrs)


def _registry(spec: CacheSpec) -> Backend:
    from workbench.cache.remote.registry import RegistryBackend

    return RegistryBackend(spec.attrs.get("ref", ""))


def _inline(spec: CacheSpec) -> Backend:
    raise RemoteCacheError("type=inline is written into the exported image's config, not to a backend")


# Backend constructors by `type=`.
BACKENDS: dict[str, Callable[[CacheSpec], Backend]] = {
    "local": _local,
    "gha": _gha,
    "registry": _registry,
    "inline": _inline,
}


_SECRET_ATTRS = re.compile(r"((?:^|,)\s*(?:token|ghtoken|secret)\s*=)[^,]*")


def _without_secrets(text: str) -> str:
    return _SECRET_ATTRS.sub(r"\1****", text)


def parse_cache_spec(text: str, export: bool, env: Mapping[str, str] | None = None) -> CacheSpec:
    """Parse one flag value; CacheSpecError says what is wrong (flag and attribute)."""
    flag = "--cache-to" if export else "--cache-from"
    shown = _without_secrets(text)  # errors quote the flag, never its token= / ghtoken= values
    env = os.environ if env is None else env
    attrs: dict[str, str] = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        if not eq:
            if "," not in text and export is False and k:  # `--cache-from REF` is a registry ref in buildx
                attrs = {"type": "registry", "ref": k}
                break
            raise CacheSpecError(f"{flag} {shown!r}: {part!r} is not key=value")
        attrs[k.strip()] = v.strip()
    kind = attrs.pop("type", "")
    if not kind:
        raise CacheSpecError(f"{flag} {shown!r}: type= is required (one of {', '.join(sorted(BACKENDS))})")
    if kind not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise CacheSpecError(f"{flag} {shown!r}: unsupported cache type {kind!r} (supported: {known})")
    if "ignore-error" in attrs and _parse_bool(attrs["ignore-error"]) is None:
        raise CacheSpecError(f"{flag} {shown!r}: ignore-error={attrs['ignore-error']!r} is not a boolean")
    if kind == "inline" and not export:
        raise CacheSpecError(f"{flag} {shown!r}: type=inline is for --cache-to; import it with "
                             "--cache-from type=registry,ref=IMAGE")
    if kind == "registry" and not attrs.get("ref"):
        raise CacheSpecError(f"{flag} {shown!r}: ref= is required for type=registry")
    if kind == "local":
        need = "dest" if export else "src"
        if not attrs.get(need):
            raise CacheSpecError(f"{flag} {shown!r}: {need}= is required for type=local")
    if kind == "gha":
        try:
            _github_env(attrs, env)
            from workbench.cache.remote.gha import GhaConfig

            GhaConfig.from_attrs(attrs)  # URL/version/timeout/token errors now, not after the build
        except RemoteCacheError as e:
            raise CacheSpecError(f"{flag} {shown!r}: {e}") from None
    return CacheSpec(kind, attrs, export)


def _github_env(attrs: dict[str, str], env: Mapping[str, str]) -> None:
    """buildctl's `loadGithubEnv`: missing url/url_v2/token come from the Actions environment."""
    version = attrs.get("version", "")
    if "version" not in attrs and _parse_bool(env.get("ACTIONS_CACHE_SERVICE_V2", "")) is True:
        version = "2"
    if version == "2" and "url_v2" not in attrs and env.get("ACTIONS_RESULTS_URL"):
        attrs["url_v2"] = env["ACTIONS_RESULTS_URL"]
    if "url" not in attrs:
        if env.get("ACTIONS_CACHE_URL"):
            attrs["url"] = env["ACTIONS_CACHE_URL"]
        elif env.get("ACTIONS_RESULTS_URL"):
            attrs["url"] = env["ACTIONS_RESULTS_URL"]
    if "url" not in attrs and "url_v2" not in attrs:
        raise RemoteCacheError("cache with type gha requires url parameter to be set")
    if "token" not in attrs:
        if not env.get("ACTIONS_RUNTIME_TOKEN"):
            raise RemoteCacheError("cache with type gha requires token parameter or $ACTIONS_RUNTIME_TOKEN")
        attrs["token"] = env["ACTIONS_RUNTIME_TOKEN"]
