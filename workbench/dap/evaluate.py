"""`evaluate` at a stop: a command's captured output (capped), or `exec` in the editor's terminal."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.dap.protocol import Writer
    from workbench.dap.target import Stop, Target
    from workbench.dap.terminal import TerminalServer

EVAL_LIMIT = 64 * 1024


def captured(target: Target, stop: Stop, expr: str, cancel: threading.Event) -> str:
    """`sh -c expr` in the stopped step: stdout then stderr (cut at EVAL_LIMIT), then `[exit code N]` if N != 0."""
    chunks: dict[int, list[bytes]] = {1: [], 2: []}
    size = [0]

    def take(stream: int, data: bytes) -> None:
        room = EVAL_LIMIT - size[0]
        if room > 0:
            chunks[stream].append(data[:room])
        size[0] += len(data)

    code = target.run_captured(stop, ["sh", "-c", expr], take, cancel)
    text = b"".join(chunks[1] + chunks[2]).decode("utf-8", "replace")
    if size[0] > EVAL_LIMIT:
        text += f"\n[output cut at {EVAL_LIMIT // 1024} KiB of {size[0]} bytes]"
    if code != 0:
        text += ("" if not text or text.endswith("\n") else "\n") + f"[exit code {code}]"
    return text


class Terminals:
    """Shells in the editor's terminal (reverse `runInTerminal`), by the request's seq."""

    def __init__(self, out: Writer, redact: Callable[[str], str]) -> None:
        self.out, self.redact = out, redact
        self._servers: dict[int, TerminalServer] = {}

    def answered(self, msg: dict[str, Any]) -> None:
        """The client's answer to runInTerminal: a failure closes its socket and is said."""
        server = self._servers.get(int(msg.get("request_seq") or 0))
        if server is not None and not msg.get("success"):
            self._servers.pop(int(msg["request_seq"]), None)
            server.close()
            self.out.output(f"the client could not open a terminal: {msg.get('message') or 'no reason given'}\n",
                            "important")

    def open(self, target: Target, stop: Stop, argv: list[str], cwd: Path) -> dict[str, Any]:
        """Ask the client to run the attach program in a terminal, and serve it `argv` in the step."""
        from workbench.dap.terminal import TerminalServer

        server = TerminalServer()
        seq = self.out.send({"type": "request", "command": "runInTerminal", "arguments": {
            "kind": "integrated", "title": f"workbench: {stop.vertex.name}"[:80], "cwd": str(cwd),
            "args": server.argv}})
        self._servers[seq] = server

        def run() -> None:
            try:
                code = server.run(lambda fd: target.exec(stop, argv, fd), target.kill_shells)
            except Exception as e:  # noqa: BLE001 - said to the client
                self.out.output(self.redact(f"exec {shlex.join(argv)}: {e}\n"), "important")
                return
            finally:
                self._servers.pop(seq, None)
            self.out.output(f"exec {shlex.join(argv)}: " + ("the terminal never connected\n" if code is None
                                                             else f"exit code {code}\n"), "console")

        threading.Thread(target=run, name="dap-exec", daemon=True).start()
        return {"result": f"{shlex.join(argv)} runs in the terminal", "variablesReference": 0}

    def close(self) -> None:
        for server in list(self._servers.values()):
            server.close()
