"""Registry cache (`type=registry`) and inline cache (`type=inline`) round trips through the real local registry."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.test_cache_remote import _assert_all_cached, _run, _steps, make_project


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def _skopeo_raw(ref: str, config: bool = False) -> dict[str, object]:
    args = ["skopeo", "inspect", "--tls-verify=false", "--raw"] + (["--config"] if config else [])
    proc = subprocess.run([*args, f"docker://{ref}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_registry_cache_round_trip(registry: str, project: Path, tmp_path: Path) -> None:
    ref = f"localhost:5055/wbcache-{secrets.token_hex(4)}:buildcache"
    first = _run(project, tmp_path / "r1", "--cache-to", f"type=registry,ref={ref},mode=max")
    assert f"exporting cache to registry:{ref}" in first.stderr
    manifest = _skopeo_raw(ref)
    assert manifest["config"]["mediaType"] == "application/vnd.workbench.cacheconfig.v0+json"  # type: ignore[index]
    assert len(manifest["layers"]) >= 3  # type: ignore[arg-type]  # base, COPY, two RUNs (base may be shared)
    # a fresh store: everything comes from the registry, no RUN executes
    _assert_all_cached(_run(project, tmp_path / "r2", "--cache-from", f"type=registry,ref={ref}",
                            "-o", f"type=local,dest={tmp_path / 'out'}"))
    assert (tmp_path / "out" / "a.copy").read_text() == "a\n"
    assert (tmp_path / "out" / "two").read_text() == "two\n"
    # a second export finds its blobs already there
    again = _run(project, tmp_path / "r2", "--cache-to", f"type=registry,ref={ref},mode=max")
    assert again.returncode == 0


def test_registry_cache_missing_ref_is_a_warning(registry: str, project: Path, tmp_path: Path) -> None:
    ref = f"localhost:5055/wbcache-{secrets.token_hex(4)}:nothing-here"
    proc = _run(project, tmp_path / "r1", "--cache-from", f"type=registry,ref={ref}")
    assert set(_steps(proc.stderr).values()) == {"RUN"}
    assert "WARNING" in proc.stderr or "warning" in proc.stderr.lower()


def test_inline_cache_round_trip(registry: str, project: Path, tmp_path: Path) -> None:
    image = f"localhost:5055/wbinline-{secrets.token_hex(4)}:1"
    first = _run(project, tmp_path / "r1", "--cache-to", "type=inline",
                 "--output", f"type=image,name={image},push=true")
    assert first.returncode == 0
    config = _skopeo_raw(image, config=True)
    assert "workbench.cache.v0" in config  # the cache travels in the image config
    _assert_all_cached(_run(project, tmp_path / "r2", "--cache-from", f"type=registry,ref={image}",
                            "-o", f"type=local,dest={tmp_path / 'out'}"))
    assert (tmp_path / "out" / "two").read_text() == "two\n"


def test_inline_is_export_only(tmp_path: Path, project: Path) -> None:
    proc = _run(project, tmp_path / "r", "--cache-from", "type=inline", check=False)
    assert proc.returncode == 2 and "type=inline is for --cache-to" in proc.stderr
