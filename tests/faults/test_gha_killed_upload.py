"""A build killed (SIGKILL) while it uploads to the gha cache: the retry never reports a layer done that the
service has not committed, it takes the dead build's reservation over once that is stale and commits the
layer itself, and a build on a fresh root then gets every step from that cache."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from tests.test_cache_remote import GhaServer, _assert_all_cached, _run, make_project

LAYER_DONE = re.compile(r"writing layer (sha256:[0-9a-f]{64})\b[^\n]* done$", re.M)


def _wait_for_open_upload(server: GhaServer, build: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert build.poll() is None, f"the build ended before uploading: {build.communicate()[1][-3000:]}"
        pending = [str(e["key"]) for e in server.entries()
                   if str(e["key"]).startswith("buildkit-blob-1-") and not e["committed"]]
        if pending:
            return pending[0]
        time.sleep(0.1)
    raise AssertionError("the build never started an upload")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_retry_after_a_killed_upload_commits_it(registry: str, tmp_path: Path, version: str) -> None:
    # the stale reservation can be taken over after 6 s: the retry (started at once) has to wait for it
    server = GhaServer(tmp_path / "gha", "--reservation-timeout", "6")
    try:
        where = "url_v2" if version == "v2" else "url"
        spec = f"type=gha,{where}={server.url},token={server.token},scope=killed,mode=max"
        project = make_project(tmp_path)
        root = tmp_path / "root"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONS_")}
        env["WORKBENCH_SERVER"] = "0"  # the process killed is the build itself
        server.faults(slow_uploads=60)  # every upload call hangs: the kill lands mid-upload
        build = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(project),
                                              "--cache-to", spec],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            pending = _wait_for_open_upload(server, build)
        finally:
            build.send_signal(signal.SIGKILL)
            build.communicate(timeout=30)
        server.faults(slow_uploads=0)

        retry = _run(project, root, "--cache-to", spec, env={"WORKBENCH_SERVER": "0"})
        entries = server.entries()
        committed = {str(e["key"]) for e in entries if e["committed"]}
        done = LAYER_DONE.findall(retry.stderr)
        assert done, retry.stderr
        for digest in done:  # nothing reported done that is not there
            assert f"buildkit-blob-1-{digest}" in committed, (digest, retry.stderr[-3000:])
        assert pending in committed, (pending, entries)
        assert all(e["committed"] for e in entries), entries  # no stale reservation left behind
        assert server.stats().get("reservations.taken-over", 0) >= 1

        fresh = _run(project, tmp_path / "fresh", "--cache-from", spec)
        _assert_all_cached(fresh)
    finally:
        server.stop()
