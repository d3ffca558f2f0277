"""A small Debug Adapter Protocol client for scripts: starts `workbench dap` on stdio, sends requests, waits for
responses and events, and keeps every message both ways with its time since the start (`log`).

It frames messages itself (Content-Length headers, as the protocol says) rather than through workbench.dap,
so that a recording shows what an editor would exchange with the adapter, nothing of its internals.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Message = dict[str, Any]


class DapClient:
    """`argv` (a `workbench dap` command line) run with its stdin/stdout as the DAP channel."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=cwd, env=env)
        self.t0 = time.monotonic()
        self.log: list[tuple[float, str, Message]] = []
        """(seconds since the start, "client" or "adapter", the message), in the order they went."""
        self._lock = threading.Lock()
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._pending: list[Message] = []
        self._seq = 0
        self.stderr = bytearray()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        """Keep what the adapter says on stderr (read all along, so that it never blocks on a full pipe)."""
        assert self.proc.stderr is not None
        while chunk := self.proc.stderr.read1(65536):
            self.stderr += chunk

    def _note(self, side: str, msg: Message) -> None:
        with self._lock:
            self.log.append((time.monotonic() - self.t0, side, msg))

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = -1
            while True:  # headers, up to the blank line
                line = out.readline()
                if not line:
                    self._inbox.put(None)
                    return
                if not line.strip():
                    break
                name, _, value = line.decode("ascii", "replace").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length < 0:
                raise RuntimeError("the adapter sent a message without a Content-Length header")
            msg = json.loads(out.read(length))
            self._note("adapter", msg)
            self._inbox.put(msg)

    def send(self, command: str, arguments: dict[str, Any] | None = None) -> int:
        self._seq += 1
        msg: Message = {"seq": self._seq, "type": "request", "command": command}
        if arguments is not None:
            msg["arguments"] = arguments
        body = json.dumps(msg).encode()
        self._note("client", msg)
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()
        return self._seq

    def wait(self, pred: Callable[[Message], bool], timeout: float = 180) -> Message:
        """The first message not yet taken for which `pred` holds (others are kept for later waits)."""
        for msg in self._pending:
            if pred(msg):
                self._pending.remove(msg)
                return msg
        end = time.monotonic() + timeout
        while True:
            try:
                msg = self._inbox.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no such message from the adapter in {timeout:.0f} s") from None
            if msg is None:
                raise RuntimeError(f"the adapter ended: {self.stderr[-2000:].decode(errors='replace')}")
            if pred(msg):
                return msg
            self._pending.append(msg)

    def request(self, command: str, arguments: dict[str, Any] | None = None) -> Message:
        """Send a request and return its successful response (RuntimeError with the message otherwise)."""
        seq = self.send(command, arguments)
        resp = self.wait(lambda m: m.get("type") == "response" and m.get("request_seq") == seq)
        if not resp.get("success"):
            raise RuntimeError(f"{command} failed: {resp.get('message')}")
        return resp

    def event(self, name: str, timeout: float = 180) -> Message:
        return self.wait(lambda m: m.get("type") == "event" and m.get("event") == name, timeout)

    def close(self, timeout: float = 60) -> int:
        """Close the channel and wait for the adapter to exit; its exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
