"""containerd's platform specifiers (``platforms.Parse``, normalized), as the build checks compare them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_KNOWN_OS = frozenset({"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
                       "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"})
_KNOWN_ARCH = frozenset({"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
                         "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
                         "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm"})
_SPECIFIER = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Platform:
    """An ``os/arch[/variant]`` triple."""

    os: str
    arch: str
    variant: str = ""

    def format(self) -> str:
        """The ``os/arch[/variant]`` text."""
        return "/".join(p for p in (self.os, self.arch, self.variant) if p)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd ``normalizeArch``."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8", "v8.0") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def parse_platform(spec: str, default: Platform | None = None) -> Platform | None:
    """containerd ``platforms.Parse`` (normalized); None when it would fail."""
    parts = spec.split("/")
    if not 1 <= len(parts) <= 3 or not all(_SPECIFIER.fullmatch(p) for p in parts):
        return None
    os_ = parts[0].lower()
    if os_ == "macos":
        os_ = "darwin"
    dflt = default or Platform("linux", "amd64")
    if len(parts) == 1:
        if os_ in _KNOWN_OS:
            return Platform(os_, dflt.arch, dflt.variant)
        arch, variant = _normalize_arch(parts[0], "")
        return Platform(dflt.os, arch, variant) if arch in _KNOWN_ARCH else None
    arch, variant = _normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return Platform(os_, arch, variant)

