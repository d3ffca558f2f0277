"""`workbench dap` as an ordinary user: its builds run in the user's namespace (a breakpoint, evaluate as the
namespace's root, the build's end), and `--listen` serves the user's own editor, which stays outside that
namespace, while a RUN step of the user's build, in a container of its own, is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.rootless.conftest import PYTHON, RootlessUser
from tests.test_dap_adapter import CLIENT, DapClient

BASE = "FROM localhost:5055/busybox\n"


def test_a_breakpoint_and_evaluate_in_a_rootless_build(rootless_user: RootlessUser, registry: str) -> None:
    ctx = rootless_user.mkdir("dap-ctx")
    df = rootless_user.write(ctx / "Dockerfile", BASE + "ENV WHO=rootless\nRUN echo one > /one\n"
                                                        "RUN chown 1000:1000 /one\n")
    root = rootless_user.mkdir("dap-root")
    c = DapClient(cwd=rootless_user.home, argv=rootless_user.command([PYTHON, "-m", "workbench.cli", "dap"]))
    try:
        c.start({"dockerfile": str(df), "args": ["--root", str(root)]}, lines=[4])
        stop = c.stopped()
        assert stop["reason"] == "breakpoint"
        trace = c.request("stackTrace", {"threadId": 1})["body"]["stackFrames"]
        assert trace[0]["line"] == 4
        out = c.request("evaluate", {"expression": "id -u; echo $WHO; cat /one; head -1 /proc/self/uid_map",
                                     "context": "repl", "frameId": trace[0]["id"]})
        assert out["success"], out
        lines = out["body"]["result"].splitlines()
        assert lines[:3] == ["0", "rootless", "one"]  # root of the user's namespace, the stage's env, step 3's file
        assert lines[3].split()[:2] == ["0", str(rootless_user.uid)]  # ... which maps to the user, not to root
        c.request("continue", {"threadId": 1})
        assert c.event("exited")["body"]["exitCode"] == 0, c.outputs()
        c.event("terminated")
        c.request("disconnect", {})
        assert c.proc is not None and c.proc.wait(60) == 0
    finally:
        c.close()


STEP_CLIENT = ("RUN (printf 'Content-Length: 49\\r\\n\\r\\n"
               "{\"seq\":1,\"type\":\"request\",\"command\":\"initialize\"}'; "
               "sleep 3) | nc 127.0.0.1 {port} > /answer || true\n")


def test_listen_serves_the_users_editor_and_refuses_a_build_step(rootless_user: RootlessUser,
                                                                  registry: str) -> None:
    proc = subprocess.Popen(rootless_user.command([PYTHON, "-m", "workbench.cli", "dap", "--listen", "127.0.0.1:0"]),
                            stderr=subprocess.PIPE, text=True, cwd=rootless_user.home)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("workbench dap: listening on "), line
        bound = line.split()[-1]
        editor = subprocess.run(rootless_user.command([PYTHON, "-c", CLIENT, bound]), capture_output=True, text=True,
                                timeout=60, cwd=rootless_user.home)
        assert editor.stdout.strip() == "answered", editor.stderr  # outside the namespace: the user's own editor
        ctx = rootless_user.mkdir("dap-step")
        rootless_user.write(ctx / "Dockerfile", BASE + STEP_CLIENT.replace("{port}", bound.rsplit(":", 1)[1]))
        out = rootless_user.mkdir("dap-step-out")
        build = rootless_user.run(["build", "--no-cache", "-o", f"type=local,dest={out}", str(ctx)])
        assert build.returncode == 0, build.stderr
        assert b"initialize" not in Path(out / "answer").read_bytes()  # the step got no session
        proc.terminate()
        assert "refused a connection" in proc.stderr.read()
    finally:
        proc.terminate()
        proc.wait(30)
