"""The `.dockerignore` file of a build: which one applies and its lines (matched by `fsutil.patterns.IgnoreMatcher`)."""

from __future__ import annotations

from pathlib import Path


def load_dockerignore(context: Path, dockerfile: Path | None = None) -> list[str]:
    """Patterns from `<Dockerfile>.dockerignore` beside the Dockerfile, else `.dockerignore` in the context."""
    candidates = []
    if dockerfile is not None:
        candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    candidates.append(context / ".dockerignore")
    for c in candidates:
        if c.is_file():
            # bytes that are not UTF-8 stay as surrogate escapes, as the context's own file names do
            return c.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    return []
