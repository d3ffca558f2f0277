"""Layer digests depend on zlib-ng's deflate (gzip layers): pyproject.toml pins the exact version installed."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest


def test_zlib_ng_is_pinned_to_the_installed_version() -> None:
    deps = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    zlib_ng = [d for d in deps if re.match(r"zlib[-_]ng\b", d)]
    assert len(zlib_ng) == 1
    pin = re.fullmatch(r"zlib[-_]ng\s*==\s*([\w.]+)", zlib_ng[0].strip())
    assert pin, f"zlib-ng must be pinned (==), not {zlib_ng[0]!r}: layer digests depend on its deflate"
    try:
        installed = importlib.metadata.version("zlib-ng")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("zlib-ng is not installed")
    assert pin.group(1) == installed
