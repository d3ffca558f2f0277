"""The closing error of a failed build, with the Dockerfile lines it points at (as BuildKit shows them)."""

from __future__ import annotations

from workbench.progress.events import SourceLocation


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
            lines.append(f"{n:>4} | {mark} {src[n - 1]}".rstrip())
        lines.append("-" * 20)
    lines.append(f"ERROR: failed to solve: {message}")
    return "\n".join(lines)
