#!/usr/bin/env python3
"""Re-record the curated sessions in sessions/ from real builds of the examples kept beside them.

    .venv/bin/python scripts/record-sessions.py [NAME ...]

Each example is copied to a scratch folder (so edits made to show a cache miss never touch the tree) and
built with `workbench build --progress plain` on a fresh state root; the builds worth keeping are copied
from ROOT/history into sessions/NAME/<session folder>/ together with what the build printed (plain.txt),
which `workbench replay sessions/NAME/... --progress plain` reproduces exactly (tests/test_sessions.py).
`dap-breakpoint` is built through `workbench dap` instead, driven over stdio as an editor would
(scripts/dap_client.py), and keeps the DAP messages too (dap.jsonl).
Needs root, runc and the local registry with localhost:5055/busybox (tests/conformance/registry.sh).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from dap_client import DapClient  # scripts/dap_client.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SESSIONS = REPO / "sessions"
WORKBENCH = [str(Path(sys.executable).parent / "workbench")]
KEEP_OUT = {"README.md"}
"""Files of an example that are not part of its build context copy."""


class Recorder:
    """Builds one example in a scratch copy and keeps the chosen builds' sessions."""

    def __init__(self, name: str, scratch: Path) -> None:
        self.name = name
        self.example = SESSIONS / name
        self.ctx = scratch / name
        self.root = scratch / f"{name}-root"
        shutil.copytree(self.example, self.ctx, ignore=lambda d, names: [
            n for n in names if n in KEEP_OUT or (Path(d, n) / "events.jsonl").exists()])

    def build(self, *args: str, keep: str = "", expect_fail: bool = False, env: dict[str, str] | None = None) -> str:
        cmd = WORKBENCH + ["build", "--root", str(self.root), "--progress", "plain", *args, str(self.ctx)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.ctx, timeout=600,
                              env={**os.environ, "WORKBENCH_SERVER": "0", **(env or {})})
        if (proc.returncode != 0) != expect_fail:
            raise SystemExit(f"{self.name}: build {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        if keep:
            self._keep(keep, proc.stderr)
        return proc.stderr

    def _keep(self, folder: str, plain: str) -> None:
        history = self.root / "history"
        newest = max(history.iterdir(), key=lambda p: json.loads((p / "meta.json").read_text())["started"])
        dest = self.example / folder
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(newest, dest)
        meta = json.loads((dest / "meta.json").read_text())
        for key in ("context", "dockerfile"):  # paths as they are in the tree, not in the scratch copy
            meta[key] = str(Path("sessions") / self.name / Path(meta[key]).relative_to(self.ctx))
        meta.pop("pid", None)
        (dest / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        (dest / "plain.txt").write_text(plain)
        print(f"  recorded sessions/{self.name}/{folder}")

    def dap(self, drive: Callable[[DapClient], None], keep: str) -> None:
        """A build debugged through `workbench dap` on stdio, as an editor drives it (`drive`); its history
        session is kept in `keep` with the DAP messages both ways (dap.jsonl) and, as plain.txt, what
        `workbench replay --progress plain` prints for it (the adapter sends its progress to the editor)."""
        client = DapClient(WORKBENCH + ["dap"], self.ctx, {**os.environ, "WORKBENCH_SERVER": "0"})
        try:
            drive(client)
        finally:
            code = client.close()
        if code != 0:
            raise SystemExit(f"{self.name}: workbench dap exited {code}:\n{client.stderr[-3000:].decode()}")
        self._keep(keep, "")
        dest = self.example / keep
        replay = subprocess.run(WORKBENCH + ["replay", str(dest), "--progress", "plain"], capture_output=True,
                                text=True, timeout=60)
        if replay.returncode != 0:
            raise SystemExit(f"{self.name}: replay failed: {replay.stderr[-3000:]}")
        (dest / "plain.txt").write_text(replay.stdout)
        with (dest / "dap.jsonl").open("w") as f:
            for t, side, msg in client.log:
                f.write(self.neutral(json.dumps({"t": round(t, 3), "from": side, "message": msg},
                                                ensure_ascii=False)) + "\n")

    def neutral(self, text: str) -> str:
        """`text` with the scratch copy's paths as they are in the tree, and the state root as ROOT."""
        return text.replace(str(self.root), "ROOT").replace(str(self.ctx), f"sessions/{self.name}")

    def edit(self, relpath: str, text: str) -> None:
        (self.ctx / relpath).write_text(text)


def cache_miss_copy(r: Recorder) -> None:
    r.build()
    r.edit("src/app.sh", 'echo "app version 2"\n')
    r.build(keep="session")  # COPY . missed: src/app.sh changed; the slow install runs again
    r.build("-f", str(r.ctx / "Dockerfile.restructured"))
    r.edit("src/app.sh", 'echo "app version 3"\n')
    r.build("-f", str(r.ctx / "Dockerfile.restructured"), keep="restructured-session")  # the install stays cached


def multi_stage_parallel(r: Recorder) -> None:
    r.build(keep="session")


def cache_mount(r: Recorder) -> None:
    r.build("--build-arg", "APP_VERSION=1", keep="first-build-session")
    r.build("--build-arg", "APP_VERSION=2", keep="session")  # the step runs again; the downloads are cached


def secret_mount(r: Recorder) -> None:
    token = "tok-" + secrets.token_hex(12)
    src = r.root.parent / "api_token"
    src.write_text(token + "\n")
    plain = r.build("--secret", f"id=api_token,src={src}", keep="session")
    leaks = [p for p in (r.example / "session").rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    if token in plain or leaks:
        raise SystemExit(f"secret-mount: the secret value leaked into {leaks or 'the build output'}")


def devices(r: Recorder) -> None:
    spec_dir = r.ctx / "cdi"
    r.build("--cdi-spec-dir", str(spec_dir), keep="session")  # auto-allowed by the spec's annotation
    r.build("--cdi-spec-dir", str(spec_dir), "-f", str(r.ctx / "Dockerfile.denied"), keep="denied-session",
            expect_fail=True)


def dap_breakpoint(r: Recorder) -> None:
    dockerfile = str(r.ctx / "Dockerfile")

    def drive(c: DapClient) -> None:
        c.request("initialize", {"clientID": "record-sessions", "adapterID": "workbench", "linesStartAt1": True,
                                 "columnsStartAt1": True, "pathFormat": "path", "supportsRunInTerminalRequest": False})
        c.event("initialized")
        c.request("launch", {"type": "dockerfile", "request": "launch", "name": "Debug Dockerfile",
                             "dockerfile": dockerfile, "contextPath": str(r.ctx), "args": ["--root", str(r.root)]})
        c.request("setBreakpoints", {"source": {"path": dockerfile}, "breakpoints": [{"line": DAP_BREAK_LINE}]})
        c.request("setExceptionBreakpoints", {"filters": ["error"]})
        c.request("configurationDone")
        stopped = c.event("stopped")["body"]
        thread = stopped["threadId"]
        c.request("threads")
        frame = c.request("stackTrace", {"threadId": thread})["body"]["stackFrames"][0]
        if stopped["reason"] != "breakpoint" or frame["line"] != DAP_BREAK_LINE:
            raise SystemExit(f"dap-breakpoint: stopped for {stopped['reason']} at line {frame['line']}")
        scopes = {s["name"]: s for s in c.request("scopes", {"frameId": frame["id"]})["body"]["scopes"]}
        c.request("variables", {"variablesReference": scopes["Step"]["variablesReference"]})
        c.request("variables", {"variablesReference": scopes["Environment"]["variablesReference"]})
        c.request("evaluate", {"expression": 'echo "$GREETING from $(pwd)"; cat words.txt', "context": "repl",
                               "frameId": frame["id"]})
        c.request("continue", {"threadId": thread})
        c.event("terminated")
        c.request("disconnect", {})

    r.dap(drive, keep="session")


DAP_BREAK_LINE = 5
"""The RUN of the build stage in sessions/dap-breakpoint/Dockerfile."""


EXAMPLES: dict[str, Callable[[Recorder], None]] = {
    "cache-miss-copy": cache_miss_copy,
    "multi-stage-parallel": multi_stage_parallel,
    "cache-mount": cache_mount,
    "secret-mount": secret_mount,
    "devices": devices,
    "dap-breakpoint": dap_breakpoint,
}


def main(names: list[str]) -> int:
    proc = subprocess.run(["sh", str(REPO / "tests" / "conformance" / "registry.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    for name in names or [n for n in EXAMPLES if (SESSIONS / n).is_dir()]:
        if name not in EXAMPLES:
            print(f"unknown session {name!r} (known: {', '.join(EXAMPLES)})", file=sys.stderr)
            return 2
        print(f"{name}:")
        with tempfile.TemporaryDirectory(prefix="record-sessions-") as scratch:
            EXAMPLES[name](Recorder(name, Path(scratch)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
