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
    from workbench.progress.redact import Redactor

EVAL_LIMIT = 64 * 1024


def captured(target: Target, stop: Stop, expr: str, cancel: threading.Event, redactor: Redactor | None = None) -> str:
    """`sh -c expr` in the stopped step: stdout then stderr (cut at EVAL_LIMIT), then `[exit code N]` if N != 0.

    Secrets are masked in the bytes before the cut and before decoding: a value that straddles the cut, or that
    is not UTF-8, never shows even in part."""
    margin = max((len(v) for v in redactor.values), default=0) if redactor else 0
    keep = EVAL_LIMIT + margin  # enough to see whole any value that starts before the cut
    chunks: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    got = {1: 0, 2: 0}

    def take(stream: int, data: bytes) -> None:
        buf = chunks[stream]
        buf += data[:max(0, keep - len(buf))]
        got[stream] += len(data)

    code = target.run_captured(stop, ["sh", "-c", expr], take, cancel)
    size = got[1] + got[2]
    data = b"".join(_masked(bytes(chunks[n]), redactor, got[n] > len(chunks[n])) for n in (1, 2))
    if redactor:
        data = redactor.data(data)
    text = data[:EVAL_LIMIT].decode("utf-8", "replace")
    if size > EVAL_LIMIT:
        text += f"\n[output cut at {EVAL_LIMIT // 1024} KiB of {size} bytes]"
    if code != 0:
        text += ("" if not text or text.endswith("\n") else "\n") + f"[exit code {code}]"
    return text


def _masked(data: bytes, redactor: Redactor | None, cut: bool) -> bytes:
    """`data` with its values masked; when it was `cut`, an end that could be the start of a value is dropped."""
    if not redactor:
        return data
    while cut and (held := redactor.held_back(data)) > 0:
        data = data[:-held]
    return redactor.data(data)


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

    def open(self, target: Target, stop: Stop, argv: list[str], cwd: Path, tmp: Path | None = None) -> dict[str, Any]:
        """Ask the client to run the attach program in a terminal, and serve it `argv` in the step; its socket's
        folder goes under `tmp` (the state root's) when given."""
        from workbench.dap.terminal import TerminalServer

        server = TerminalServer(tmp)
        seq = self.out.send({"type": "request", "command": "runInTerminal", "arguments": {
            "kind": "integrated", "title": self.redact(f"workbench: {stop.vertex.name}")[:80], "cwd": str(cwd),
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

    def open_count(self) -> int:
        """Terminals asked for or attached whose shell has not ended."""
        return len(self._servers)

    def close(self) -> None:
        """Close every terminal socket: one not yet attached never will be (its shell is not started)."""
        for server in list(self._servers.values()):
            server.close()
