"""Remote build cache: gha (v1 and v2, through `workbench gha-server`) and type=local round trips, faults."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from tests.test_build_e2e import _steps

DOCKERFILE = """FROM localhost:5055/busybox
COPY a.txt /a.txt
RUN echo RAN-MARKER-ONE && cat /a.txt > /a.copy
RUN echo RAN-MARKER-TWO && echo two > /two
"""


class GhaServer:
    """A running `workbench gha-server`: its environment lines, and its admin calls (faults, stats)."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(WORKBENCH + ["gha-server", "--port", "0", "--data", str(tmp), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.env: dict[str, str] = {}
        for _ in range(3):
            line = self.proc.stdout.readline()
            assert "=" in line, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
            k, _, v = line.strip().partition("=")
            self.env[k] = v
        self.url = self.env["ACTIONS_RESULTS_URL"]
        self.token = self.env["ACTIONS_RUNTIME_TOKEN"]

    def _call(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def faults(self, **spec: object) -> None:
        self._call("_wb/faults", {k.replace("_", "-"): v for k, v in spec.items()})

    def stats(self) -> dict[str, int]:
        return dict(self._call("_wb/stats")["stats"])  # type: ignore[arg-type]

    def entries(self) -> list[dict[str, object]]:
        return list(self._call("_wb/stats")["entries"])  # type: ignore[call-overload]

    def token_for(self, *scopes: tuple[str, int]) -> str:
        return str(self._call("_wb/token", {"scopes": [list(s) for s in scopes]})["token"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhaServer]:
    server = GhaServer(tmp_path_factory.mktemp("gha"))
    yield server
    server.stop()


@pytest.fixture()
def clean_faults(gha: GhaServer) -> Iterator[GhaServer]:
    yield gha
    gha.faults(throttle=0, fail_writes=False, truncate_downloads="", expire_urls=False)


def make_project(tmp_path: Path) -> Path:
    """A context with this file's Dockerfile and the file it copies."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a\n")
    return ctx


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def _run(project: Path, root: Path, *args: str, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONS_")}
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(project), *args],
                          capture_output=True, text=True, timeout=300, env={**base, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _assert_all_cached(proc: subprocess.CompletedProcess[str]) -> None:
    steps = _steps(proc.stderr)
    assert len(steps) == 4 and set(steps.values()) == {"CACHED"}, proc.stderr
    assert "RAN-MARKER" not in proc.stderr.replace("RUN echo RAN-MARKER", "")  # no RUN printed its marker


@pytest.mark.parametrize("how", ["v2-url_v2", "v1-url", "v2-env", "v1-env"])
def test_gha_round_trip(registry: str, gha: GhaServer, project: Path, tmp_path: Path, how: str) -> None:
    version, where = how.split("-")
    scope = f"rt-{how}"
    env: dict[str, str] = {}
    if where == "env":
        env = {"ACTIONS_RUNTIME_TOKEN": gha.token}
        env.update({"ACTIONS_CACHE_SERVICE_V2": "1", "ACTIONS_RESULTS_URL": gha.url} if version == "v2"
                   else {"ACTIONS_CACHE_URL": gha.url})
        spec = f"type=gha,scope={scope}"
    else:
        spec = f"type=gha,{where}={gha.url},token={gha.token},scope={scope}"
    before = gha.stats()
    first = _run(project, tmp_path / "r1", "--cache-to", spec + ",mode=max", env=env)
    assert set(_steps(first.stderr).values()) == {"RUN"}
    assert f"exporting cache to gha:{scope} (cache service {version})" in first.stderr
    assert re.search(r"writing layer sha256:[0-9a-f]{64} [\d.]+k?M?B / [\d.]+k?M?B .*done", first.stderr)  # bytes up
    second = _run(project, tmp_path / "r2", "--cache-from", spec, "-o", f"type=local,dest={tmp_path / 'out'}",
                  env=env)
    _assert_all_cached(second)
    assert re.search(r"#\d+ sha256:[0-9a-f]{64} [\d.]+k?M?B / [\d.]+k?M?B .*done", second.stderr)  # bytes down
    assert (tmp_path / "out" / "two").read_text() == "two\n" and (tmp_path / "out" / "a.copy").read_text() == "a\n"
    after = gha.stats()
    used = {k for k in after if after[k] != before.get(k, 0)}
    if version == "v2":
        assert "v2.CreateCacheEntry" in used and "v2.GetCacheEntryDownloadURL" in used and "v1.query" not in used
    else:
        assert "v1.reserve" in used and "v1.query" in used and not any(k.startswith("v2.") for k in used)
    # blobs present remotely are not uploaded again
    again = _run(project, tmp_path / "r1", "--cache-to", spec + ",mode=max", env=env)
    assert "writing layer" in again.stderr
    new = gha.stats()
    assert new.get("v2.CreateCacheEntry", 0) - after.get("v2.CreateCacheEntry", 0) <= 1  # only the index
    assert new.get("v1.reserve", 0) - after.get("v1.reserve", 0) <= 1
    # the index went to the next free number
    index = f"index-{scope}-1-" + hashlib.sha256(b"refs/heads/main").hexdigest()[:8]
    assert {e["key"] for e in gha.entries() if str(e["key"]).startswith(index)} == {index + "#1", index + "#2"}


def test_writable_scope_is_written_and_readable_scopes_are_read(registry: str, gha: GhaServer, project: Path,
                                                               tmp_path: Path) -> None:
    main = f"type=gha,url_v2={gha.url},token={gha.token},scope=scopes,mode=max"
    _run(project, tmp_path / "r1", "--cache-to", main)
    feature = gha.token_for(("refs/heads/feature", 3), ("refs/heads/main", 1))
    spec = f"type=gha,url_v2={gha.url},token={feature},scope=scopes,mode=max"
    proc = _run(project, tmp_path / "r2", "--cache-from", spec, "--cache-to", spec)
    _assert_all_cached(proc)  # main's index, read with a token that may only read main
    written = {str(e["key"]): e["scope"] for e in gha.entries()}
    feature_index = "index-scopes-1-" + hashlib.sha256(b"refs/heads/feature").hexdigest()[:8] + "#1"
    assert written[feature_index] == "refs/heads/feature"
    assert not any(k.startswith("buildkit-blob-") and s == "refs/heads/feature" for k, s in written.items())


def test_existing_blobs_listed_through_the_rest_api(registry: str, gha: GhaServer, project: Path,
                                                    tmp_path: Path) -> None:
    # the emulator's REST API takes its own tokens (GitHub's takes a GitHub token)
    spec = (f"type=gha,url_v2={gha.url},token={gha.token},scope=rest,mode=max,repository=o/r,"
            f"ghtoken={gha.token}")
    env = {"GITHUB_API_URL": gha.url.rstrip("/")}
    _run(project, tmp_path / "r1", "--cache-to", spec, env=env)
    before = gha.stats()
    _run(project, tmp_path / "r1", "--cache-to", spec, env=env)
    after = gha.stats()
    assert after["rest.list"] > before.get("rest.list", 0)
    assert after.get("v2.CreateCacheEntry", 0) - before.get("v2.CreateCacheEntry", 0) == 1  # the index only
    # no per-blob probing: only the index lookup for the next free number
    assert after["v2.GetCacheEntryDownloadURL"] - before["v2.GetCacheEntryDownloadURL"] == 1


def _records(cache: Path) -> set[str]:
    index = json.loads((cache / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
    manifests = json.loads((cache / "blobs" / "sha256" / index).read_text())["manifests"]
    config = next(m for m in manifests if m["mediaType"] == "application/vnd.workbench.cacheconfig.v0+json")
    doc = json.loads((cache / "blobs" / "sha256" / config["digest"].split(":")[1]).read_text())
    return {r["name"] for r in doc["records"]}


def test_mode_min_exports_only_the_final_stage(registry: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox AS build\nRUN echo built > /b\n"
                                    "FROM localhost:5055/busybox\nCOPY --from=build /b /b\n")
    _run(ctx, tmp_path / "r1", "--cache-to", f"type=local,dest={tmp_path / 'min'}")  # mode=min is the default
    _run(ctx, tmp_path / "r1", "--cache-to", f"type=local,dest={tmp_path / 'max'},mode=max")
    build_step = "[build 2/2] RUN echo built > /b"
    assert "[stage-1 2/2] COPY --from=build /b /b" in _records(tmp_path / "min")
    assert build_step not in _records(tmp_path / "min")
    assert build_step in _records(tmp_path / "max")
    second = _run(ctx, tmp_path / "r2", "--cache-from", f"type=local,src={tmp_path / 'min'}")
    assert _steps(second.stderr)["[stage-1 2/2] COPY --from=build /b /b"] == "CACHED", second.stderr


def test_every_request_is_bounded_by_the_timeout(registry: str, clean_faults: GhaServer, project: Path,
                                                 tmp_path: Path) -> None:
    gha = clean_faults
    gha.faults(throttle=1000)
    spec = f"type=gha,url_v2={gha.url},token={gha.token},scope=timeout,timeout=2s"
    t0 = time.monotonic()
    proc = _run(project, tmp_path / "r1", "--cache-to", spec, check=False)
    assert proc.returncode == 1 and "still throttled (429) when the timeout ran out" in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 60


def test_blob_responses_carry_azure_headers(gha: GhaServer, tmp_path: Path) -> None:
    version = "0" * 64
    auth = {"Authorization": f"Bearer {gha.token}", "Content-Type": "application/json"}

    def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> object:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or auth)
        return urllib.request.urlopen(req, timeout=10)

    twirp = gha.url + "twirp/github.actions.results.api.v1.CacheService/"
    created = json.loads(call("POST", twirp + "CreateCacheEntry",
                              json.dumps({"key": "hdr#1:x", "version": version}).encode()).read())  # type: ignore
    put = call("PUT", created["signed_upload_url"], b"abc", {"x-ms-blob-type": "BlockBlob"})
    final = json.loads(call("POST", twirp + "FinalizeCacheEntryUpload",  # size_bytes as a string, like @actions/cache
                            json.dumps({"key": "hdr#1:x", "version": version, "size_bytes": "3"}).encode()).read())  # type: ignore
    assert final["ok"] is True and isinstance(final["entry_id"], str)
    got = json.loads(call("POST", twirp + "GetCacheEntryDownloadURL", json.dumps(
        {"key": "hdr#", "restore_keys": ["hdr#"], "version": version}).encode()).read())  # type: ignore
    assert got["ok"] and got["matched_key"] == "hdr#1:x"
    resp = call("GET", got["signed_download_url"], None, {"x-ms-range": "bytes=1-"})
    for r in (put, resp):
        for h in ("x-ms-request-id", "ETag", "Last-Modified", "x-ms-version"):
            assert r.headers.get(h), (h, dict(r.headers))  # type: ignore[attr-defined]
    assert resp.status == 206 and resp.read() == b"bc" and resp.headers["Content-Range"] == "bytes 1-2/3"  # type: ignore
    with pytest.raises(urllib.error.HTTPError) as bad:  # a signature that does not match
        call("GET", got["signed_download_url"].replace("sig=", "sig=0"), None, {})
    assert bad.value.code == 403 and bad.value.headers.get("x-ms-request-id")


def test_throttled_requests_are_retried(registry: str, clean_faults: GhaServer, project: Path,
                                        tmp_path: Path) -> None:
    gha = clean_faults
    before = gha.stats().get("throttled", 0)
    gha.faults(throttle=2)
    spec = f"type=gha,url_v2={gha.url},token={gha.token},scope=throttle,mode=max"
    _run(project, tmp_path / "r1", "--cache-to", spec)
    assert gha.stats().get("throttled", 0) - before == 2
    _assert_all_cached(_run(project, tmp_path / "r2", "--cache-from", spec))


def test_failed_export_fails_the_build_unless_ignored(registry: str, clean_faults: GhaServer, project: Path,
                                                      tmp_path: Path) -> None:
    gha = clean_faults
    gha.faults(fail_writes=True)
    spec = f"type=gha,url={gha.url},token={gha.token},scope=fail,mode=max"
    failed = _run(project, tmp_path / "r1", "--cache-to", spec, check=False)
    assert failed.returncode == 1
    assert "failed to export cache to gha:fail (cache service v1)" in failed.stderr
    assert "500" in failed.stderr
    ok = _run(project, tmp_path / "r1", "--cache-to", spec + ",ignore-error=true")
    assert "WARNING" in ok.stderr or "warning" in ok.stderr
    assert "failed to export cache to gha:fail" in ok.stderr and "ignored" in ok.stderr


def test_truncated_download_is_not_trusted(registry: str, clean_faults: GhaServer, project: Path,
                                           tmp_path: Path) -> None:
    gha = clean_faults
    spec = f"type=gha,url_v2={gha.url},token={gha.token},scope=truncate,mode=max"
    _run(project, tmp_path / "r1", "--cache-to", spec)
    gha.faults(truncate_downloads="buildkit-blob-")  # the layers, not the index
    proc = _run(project, tmp_path / "r2", "--cache-from", spec)  # an import failure never fails the build
    assert "failed to import cache for [4/4]" in proc.stderr and "not trusted" in proc.stderr, proc.stderr
    steps = _steps(proc.stderr)
    assert steps["[4/4] RUN echo RAN-MARKER-TWO && echo two > /two"] == "RUN"
    assert "RAN-MARKER-TWO\n" in proc.stderr.replace("RUN echo RAN-MARKER-TWO", "")
    # nothing from the truncated download was kept
    blobs = list((tmp_path / "r2" / "content" / "blobs" / "sha256").iterdir())
    assert all(__import__("hashlib").sha256(b.read_bytes()).hexdigest() == b.name for b in blobs)


def test_expired_download_url_is_requested_again(registry: str, clean_faults: GhaServer, project: Path,
                                                 tmp_path: Path) -> None:
    gha = clean_faults
    spec = f"type=gha,url_v2={gha.url},token={gha.token},scope=expire,mode=max"
    _run(project, tmp_path / "r1", "--cache-to", spec)
    gha.faults(expire_urls=True)  # the first download URL of each entry has expired already
    before = gha.stats().get("v2.GetCacheEntryDownloadURL", 0)
    proc = _run(project, tmp_path / "r2", "--cache-from", spec)
    _assert_all_cached(proc)
    assert "failed to import" not in proc.stderr
    # the index and each downloaded layer: a lookup, then a fresh URL after the 403
    assert gha.stats()["v2.GetCacheEntryDownloadURL"] - before >= 2 * 4


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_local_round_trip(registry: str, project: Path, tmp_path: Path, compression: str) -> None:
    cache = tmp_path / "cache"
    first = _run(project, tmp_path / "r1", "--cache-to", f"type=local,dest={cache},mode=max,compression={compression}")
    assert "exporting cache to local:" in first.stderr
    index = json.loads((cache / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    assert (cache / "oci-layout").is_file()
    manifests = json.loads((cache / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer_types = {m["mediaType"] for m in manifests["manifests"] if "layer" in m["mediaType"]}
    assert layer_types == {f"application/vnd.oci.image.layer.v1.tar+{compression}"} or (
        compression == "gzip" and len(layer_types) == 2)  # gzip may keep the registry's (docker) base blob
    _assert_all_cached(_run(project, tmp_path / "r2", "--cache-from", f"type=local,src={cache}",
                            "-o", f"type=local,dest={tmp_path / 'out'}"))
    assert (tmp_path / "out" / "a.copy").read_text() == "a\n"


def test_missing_local_cache_is_a_warning(registry: str, project: Path, tmp_path: Path) -> None:
    proc = _run(project, tmp_path / "r1", "--cache-from", f"type=local,src={tmp_path / 'nothing'}")
    assert "failed to import cache from local:" in proc.stderr
    assert set(_steps(proc.stderr).values()) == {"RUN"}


@pytest.mark.parametrize(("args", "env", "error"), [
    (["--cache-to", "type=gha"], {}, "cache with type gha requires url parameter to be set"),
    (["--cache-from", "type=gha,url=http://127.0.0.1:1/"], {},
     "cache with type gha requires token parameter or $ACTIONS_RUNTIME_TOKEN"),
    (["--cache-to", "type=gha"], {"ACTIONS_CACHE_URL": "http://127.0.0.1:1/"},
     "cache with type gha requires token parameter or $ACTIONS_RUNTIME_TOKEN"),
    (["--cache-to", "type=gha,url=http://x/,token=abc"], {}, "invalid token"),
    (["--cache-to", "type=s3,bucket=b"], {}, "unsupported cache type 's3'"),
    (["--cache-to", "type=local"], {}, "dest= is required for type=local"),
    (["--cache-to", "type=local,dest=/tmp/x,ignore-error=maybe"], {}, "is not a boolean"),
])
def test_bad_cache_flags(tmp_path: Path, args: list[str], env: dict[str, str], error: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONS_")}
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(tmp_path / "r"), str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60, env={**base, **env})
    assert proc.returncode == 2
    assert error in proc.stderr, proc.stderr


def _replace_blob(cache: Path, old: str, data: bytes) -> None:
    """Put `data` in the local cache in place of the blob `old`, and every document above it (manifest list,
    index.json) rewritten to point at the new digest and size."""
    blobs = cache / "blobs" / "sha256"
    new = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / new[7:]).write_bytes(data)
    size = len(data)
    for path in [*blobs.iterdir(), cache / "index.json"]:
        raw = path.read_bytes()
        if old.encode() not in raw or path.name == old[7:]:
            continue
        doc = json.loads(raw)
        for desc in [doc.get("config") or {}, *(doc.get("manifests") or []), *(doc.get("layers") or [])]:
            if desc.get("digest") == old:
                desc["digest"], desc["size"] = new, size
        rewritten = json.dumps(doc).encode()
        if path.name == "index.json":
            path.write_bytes(rewritten)
        else:
            _replace_blob(cache, "sha256:" + path.name, rewritten)


def test_layer_lying_about_its_diff_id_is_not_imported(registry: str, project: Path, tmp_path: Path) -> None:
    """A cache whose config gives a layer another layer's diff ID: the import is refused with a warning naming
    the mismatch, the steps run, and nothing of the lie is left in the store for a later build to trust."""
    cache = tmp_path / "cache"
    _run(project, tmp_path / "r1", "--cache-to", f"type=local,dest={cache},mode=max")
    blobs = cache / "blobs" / "sha256"
    config_path = next(p for p in blobs.iterdir() if p.stat().st_size < 100_000
                       and b'"records"' in p.read_bytes() and b"vnd.workbench.cacheconfig" in p.read_bytes())
    config = json.loads(config_path.read_bytes())
    a, b = config["layers"][-1], config["layers"][-2]
    a["diffID"], b["diffID"] = b["diffID"], a["diffID"]
    _replace_blob(cache, "sha256:" + config_path.name, json.dumps(config).encode())

    root = tmp_path / "r2"
    proc = _run(project, root, "--cache-from", f"type=local,src={cache}", "-o", f"type=local,dest={tmp_path / 'out'}")
    warned = [line for line in proc.stderr.splitlines() if "failed to import cache for" in line]
    assert warned and all(re.search(r"diff id", line, re.IGNORECASE) for line in warned), proc.stderr
    assert "RUN" in set(_steps(proc.stderr).values())  # what could not be imported ran
    assert (tmp_path / "out" / "a.copy").read_text() == "a\n" and (tmp_path / "out" / "two").read_text() == "two\n"
    again = _run(project, root, "-o", f"type=local,dest={tmp_path / 'out2'}")  # the store holds only true results
    assert len(_steps(again.stderr)) >= 3 and set(_steps(again.stderr).values()) == {"CACHED"}, again.stderr
    assert (tmp_path / "out2" / "a.copy").read_text() == "a\n"
