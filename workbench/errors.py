"""The closing error of a failed build, with the Dockerfile lines it points at (as BuildKit shows them)."""

from __future__ import annotations

from workbench.progress.events import SourceLocation
from workbench.progress.text import printable, shorten


def format_failure(message: str, location: SourceLocation | None, step: str, dockerfile_text: str) -> str:
    lines: list[str] = []
    if step:
        lines += ["------", f" > {step}:", "------"]
    if location is not None and dockerfile_text:
        src = dockerfile_text.splitlines()
        start, end = location.start_line, location.end_line
        lo, hi = max(1, start - 2), min(len(src), end + 2)
        lines.append(f"{location.filename}:{start}" + (f"-{end}" if end != start else ""))
        lines.append("-" * 20)
        for n in range(lo, hi + 1):
            mark = ">>>" if start <= n <= end else "   "
            lines.append(f"{n:>4} | {mark} {shorten(printable(src[n - 1], keep=chr(9)), 300)}".rstrip())
        lines.append("-" * 20)
    elif location is not None:  # no line to show (an empty file): still say which file
        message = f"{location.filename}: {message}"
    lines.append(f"ERROR: failed to solve: {printable(message, keep=chr(9) + chr(10))}")
    return "\n".join(lines)
