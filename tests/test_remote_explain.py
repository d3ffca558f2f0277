"""Miss reasons for a remote build of our own graph (`workbench build --addr A ctx`): each step the daemon runs
gets workbench's own reckoning (from our key parts, against this root's last run on the same engine), marked as
ours; steps the daemon reports cached stay CACHED; `workbench inspect why` shows the remote build. On Docker
20.10's dockerd (BuildKit v0.8) and on /tmp/bk's buildkitd v0.20 when it runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.docker_daemon import docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import ENV, addr, workbench  # noqa: F401  (addr: the fixture)

pytestmark = pytest.mark.real

# the marker makes the ops this test's own: a daemon shares its cache between clients (and test runs)
APP = """FROM localhost:5055/busybox
ARG FLAVOUR=plain
COPY hello.txt /hello.txt
RUN cat /hello.txt > /copy.txt && echo {marker}
RUN echo flavour=$FLAVOUR > /flavour.txt
"""


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(APP.format(marker=uuid.uuid4().hex))
    (ctx / "hello.txt").write_text(f"hello {uuid.uuid4().hex}\n")
    return ctx


def _steps(r: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """Our steps by name ([n/4] …): whether the daemon had them cached, and the miss reason they started with."""
    out: dict[str, dict[str, Any]] = {}
    for line in r.stderr.splitlines():
        if not line.startswith("{"):
            continue
        for v in json.loads(line).get("vertexes", []):
            if not re.match(r"\[(?:[\w.-]+ )?\d+/\d+\] ", v.get("name", "")):
                continue
            step = out.setdefault(v["name"].split("] ", 1)[0] + "]", {"cached": False, "reason": ""})
            step["cached"] = step["cached"] or bool(v.get("cached"))
            step["reason"] = step["reason"] or (v.get("workbench") or {}).get("miss_reason", "")
    return out


def _build(addr: str, ctx: Path, root: Path, *args: str) -> dict[str, dict[str, Any]]:  # noqa: F811
    r = workbench("--addr", addr, "--progress", "rawjson", *args, str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    return _steps(r)


UNCHANGED = ("workbench's reckoning: unchanged since its last run here; the daemon's cache no longer had it "
             "(evicted or pruned)")


def _unchanged(addr: str, step: dict[str, Any]) -> bool:  # noqa: F811
    """Docker's BuildKit reports an unchanged step CACHED. buildkitd v0.20 may run our graph's context COPY again
    (its local source op is the same for every build and client: see the report of this test's change), and then
    our reckoning must say that our key parts did not change."""
    if step == {"cached": True, "reason": ""}:
        return True
    return not addr.startswith("docker://") and step == {"cached": False, "reason": UNCHANGED}


def _cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, timeout=120,
                       env=ENV)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _why(ctx: Path, root: Path) -> str:
    return _cli("inspect", "why", "--root", str(root), str(ctx))


def test_a_changed_build_arg_is_named_and_the_rest_is_cached(addr: str, tmp_path: Path,  # noqa: F811
                                                             root: Path) -> None:
    ctx = _context(tmp_path)
    first = _build(addr, ctx, root)
    assert first["[3/4]"]["reason"].startswith("workbench's reckoning: no earlier run of this step on ")
    again = _build(addr, ctx, root, "--build-arg", "FLAVOUR=spicy")
    assert _unchanged(addr, again["[2/4]"]), again
    # the RUN after the ARG sees it in its env: its reason names the arg, old and new value
    changed = "workbench's reckoning: build arg FLAVOUR changed: 'plain' → 'spicy'"
    assert again["[3/4]"] == {"cached": False, "reason": changed}
    assert again["[4/4]"] == {"cached": False, "reason": changed}

    show = _cli("history", "show", "^0", "--root", str(root))  # the history record keeps the reasons
    assert f"[4/4] RUN echo flavour=spicy > /flavour.txt\n      {changed}\n" in show, show

    why = _why(ctx, root)
    assert f"Last build of {ctx / 'Dockerfile'} on {addr} at " in why
    assert "Miss reasons are workbench's reckoning from its own key parts" in why
    copy = "CACHED" if again["[2/4]"]["cached"] else f"CACHE MISS: {UNCHANGED}"
    assert f"[2/4] COPY hello.txt /hello.txt\n    {copy}\n" in why
    assert f"[4/4] RUN echo flavour=$FLAVOUR > /flavour.txt\n    CACHE MISS: {changed}\n" in why.replace(
        "flavour=spicy", "flavour=$FLAVOUR")


def test_a_changed_context_file_and_line_are_named(addr: str, tmp_path: Path, root: Path) -> None:  # noqa: F811
    ctx = _context(tmp_path)
    _build(addr, ctx, root)
    (ctx / "hello.txt").write_text(f"changed {uuid.uuid4().hex}\n")
    again = _build(addr, ctx, root)
    ran = {name: s for name, s in again.items() if not s["cached"] and s["reason"]}
    assert "[3/4]" in ran, again
    # the COPY, or (where the daemon reports it cached) the RUN after it, names the file
    copy = again["[2/4]"]
    if not copy["cached"]:
        assert copy["reason"].startswith("workbench's reckoning: hello.txt changed (")
        assert again["[3/4]"]["reason"] == "workbench's reckoning: parent step missed: [2/4] COPY hello.txt /hello.txt"
    else:
        assert "hello.txt changed (" in again["[3/4]"]["reason"]

    dockerfile = (ctx / "Dockerfile").read_text().replace("> /flavour.txt", "> /flavour.out")
    (ctx / "Dockerfile").write_text(dockerfile)
    third = _build(addr, ctx, root)
    assert _unchanged(addr, third["[2/4]"]) and _unchanged(addr, third["[3/4]"]), third
    assert third["[4/4]"] == {"cached": False, "reason": "workbench's reckoning: instruction changed: "
                              "RUN echo flavour=$FLAVOUR > /flavour.txt → RUN echo flavour=$FLAVOUR > /flavour.out"}
    assert "instruction changed: RUN echo flavour=$FLAVOUR > /flavour.txt" in _why(ctx, root)


def test_a_fully_cached_rebuild_has_no_reasons(addr: str, tmp_path: Path, root: Path) -> None:  # noqa: F811
    ctx = _context(tmp_path)
    _build(addr, ctx, root)
    again = _build(addr, ctx, root)
    # the FROM's start is the daemon resolving it (then found cached): no reason of ours either
    assert again["[1/4]"]["reason"] == "", again
    assert all(_unchanged(addr, s) for name, s in again.items() if name != "[1/4]"), again
    why = _why(ctx, root)
    if addr.startswith("docker://"):
        assert "4 steps, 0 missed the cache" in why, why
    from_line = r"#1 \[1/4\] FROM localhost:5055/busybox\S*\n +(CACHED|RESOLVED \(unchanged since its last run here\))"
    assert re.search(from_line, why), why


def test_the_daemons_frontend_says_it_has_no_reasons(addr: str, tmp_path: Path, root: Path) -> None:  # noqa: F811
    ctx = _context(tmp_path)
    r = workbench("--addr", addr, "--frontend", "dockerfile.v0", "--progress", "plain", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    why = _why(ctx, root)
    assert why.splitlines()[1] == ("built with the daemon's Dockerfile frontend (--frontend dockerfile.v0): "
                                   "workbench has no graph of its own for this build, so it gives no miss reasons")


def test_the_fold_asks_reasons_only_for_steps_that_run(tmp_path: Path) -> None:
    """No daemon: a cached step is never explained (a fully cached build reads no context file); a source the
    daemon reports done for its cache request and then cached is CACHED in `inspect why`'s record."""
    from workbench.progress.events import VertexStarted
    from workbench.remote.proto import control_pb2 as pb
    from workbench.remote.status import StatusFold
    from workbench.solver.explain import format_last_build, load_last_build

    asked: list[str] = []
    events: list[Any] = []

    def explain(digest: str) -> tuple[str, dict[str, object] | None]:
        asked.append(digest)
        return f"reason for {digest}", None

    fold = StatusFold(events.append, explain=explain)
    t = {"seconds": 1_700_000_000}
    fold.apply(pb.StatusResponse(vertexes=[
        pb.Vertex(digest="sha256:from", name="[1/3] FROM x", started=t, completed=t),  # its cache request
        pb.Vertex(digest="sha256:from", name="[1/3] FROM x", started=t, completed=t, cached=True),
        pb.Vertex(digest="sha256:copy", name="[2/3] COPY a /", started=t, completed=t, cached=True),
        pb.Vertex(digest="sha256:run", name="[3/3] RUN true", started=t),
        pb.Vertex(digest="sha256:run", name="[3/3] RUN true", started=t, completed=t),
    ]))
    assert asked == ["sha256:from", "sha256:run"]
    assert [e.miss_reason for e in events if isinstance(e, VertexStarted)] == ["reason for sha256:from",
                                                                               "reason for sha256:run"]
    from workbench.remote.explain import save_remote_build

    (tmp_path / "Dockerfile").write_text("FROM x\n")
    save_remote_build(tmp_path / "root", tmp_path / "Dockerfile", "unix:///d.sock", fold, None)
    record = load_last_build(tmp_path / "root", tmp_path / "Dockerfile")
    assert record is not None
    assert [(s["name"], s["cached"]) for s in record["steps"]] == [
        ("[1/3] FROM x", True), ("[2/3] COPY a /", True), ("[3/3] RUN true", False)]
    assert format_last_build(record).endswith("#3 [3/3] RUN true\n    CACHE MISS: reason for sha256:run\n")


def test_no_cache_names_the_step_that_made_a_later_one_run(addr: str, tmp_path: Path, root: Path) -> None:  # noqa: F811
    """Under --no-cache the daemon runs again what depends on a RUN it re-runs (a WORKDIR after it): our reason
    says so, instead of 'the daemon's cache no longer had it'; the WORKDIR before the RUN stays cached."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM localhost:5055/busybox\nWORKDIR /w\nRUN echo {uuid.uuid4().hex}\n"
                                    "WORKDIR /v\n")
    _build(addr, ctx, root)
    steps = _build(addr, ctx, root, "--no-cache")
    assert steps["[2/4]"]["cached"], steps
    assert steps["[3/4]"]["reason"] == "workbench's reckoning: cache disabled (--no-cache)", steps
    assert steps["[4/4]"]["reason"].startswith(
        "workbench's reckoning: parent step ran again (--no-cache): [3/4] RUN echo"), steps


def test_no_cache_filter_reruns_the_named_stage_on_the_daemon(addr: str, tmp_path: Path, root: Path) -> None:  # noqa: F811
    """--no-cache-filter marks the named stage's RUN for the daemon (ignore_cache in its metadata): it runs again,
    the other stage's stays cached, and our reason names the filter."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM localhost:5055/busybox AS a\nRUN echo a {uuid.uuid4().hex} > /a\n"
                                    f"FROM localhost:5055/busybox\nRUN echo b {uuid.uuid4().hex}\n"
                                    "COPY --from=a /a /a\n")
    _build(addr, ctx, root)
    steps = _build(addr, ctx, root, "--no-cache-filter", "a")
    assert steps["[a 2/2]"]["reason"] == "workbench's reckoning: cache disabled for its stage (--no-cache-filter)", \
        steps
    assert steps["[stage-1 2/3]"]["cached"], steps
