"""What the two text views (plain and tty) share: a step with stamped log lines, and the closing summaries."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from workbench.progress.events import BuildWarning, DeviceGrant, VertexLog
from workbench.progress.trace import FAILED, Status, Step
from workbench.progress.units import format_bytes

RESET = "\x1b[0m"


def log_stamp(seconds: float) -> str:
    """A log line's offset from its step's start: 3 decimals under 10s, 2 under 100s, else 1 (display.go)."""
    seconds = max(seconds, 0.0)
    return f"{seconds:.{3 if seconds < 10 else 2 if seconds < 100 else 1}f}"


def amount(s: Status) -> str:
    """`1.20MB / 3.40MB`, or the bytes so far when the total is unknown."""
    if s.total:
        return f"{format_bytes(s.current)} / {format_bytes(s.total)}"
    return format_bytes(s.current) if s.current else ""


def device_lines(ev: DeviceGrant) -> list[str]:
    """`device vendor.com/gpu=0 granted: auto-allow (annotation)`, one line per device of a grant/denial."""
    verdict = "granted" if ev.granted else "denied"
    out = []
    for name in ev.devices or (ev.request,):
        asked = f" (requested as {ev.request})" if name != ev.request else ""
        out.append(f"device {name}{asked} {verdict}: {ev.how}")
    return out


@dataclass
class LineStep(Step):
    """A step whose output the view splits into time-stamped lines (`0.123 text`)."""

    logs: deque[str] = field(default_factory=deque)
    """Formatted log lines kept for the error summary."""
    partial: dict[int, tuple[float, bytes]] = field(default_factory=dict)
    """Per stream, an unfinished line and when its first bytes came."""

    def log_lines(self, ev: VertexLog, data: bytes) -> list[str]:
        """Complete lines of `data` (joined to what was pending), each stamped with its first bytes' time."""
        ts0, pending = self.partial.pop(ev.stream, (ev.ts, b""))
        *lines, rest = (pending + data).split(b"\n")
        if rest:
            self.partial[ev.stream] = (ts0 if not lines else ev.ts, rest)
        out = []
        for i, line in enumerate(lines):
            at = ts0 if i == 0 and pending else ev.ts
            out.append(self._stamp(at, line))
        return out

    def flush(self) -> list[str]:
        """The unfinished lines, as they are when the step ends."""
        out = [self._stamp(ts, rest) for ts, rest in self.partial.values()]
        self.partial.clear()
        return out

    def _stamp(self, ts: float, line: bytes) -> str:
        text = f"{log_stamp(self.run_time(ts))} {line.decode(errors='replace')}"  # pauses left out
        self.logs.append(text)
        return text


def error_logs(steps: Iterable[LineStep]) -> str:
    """`printErrorLogs`: each failed step's name and kept log lines between dashes."""
    out = []
    for v in steps:
        if v.state == FAILED:
            out += ["------", f" > {v.name}:", *v.logs, "------"]
    return "".join(line + "\n" for line in out)


def warning_summary(warnings: list[BuildWarning], color: str = "") -> str:
    """buildx's closing `N warning(s) found:` list."""
    if not warnings:
        return ""
    n = len(warnings)
    head = f"{n} warning{'s' if n != 1 else ''} found:\n"
    return "\n " + (color + head + RESET if color else head) + "".join(f" - {w.message}\n" for w in warnings)
