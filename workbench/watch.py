"""Watching a build's inputs: the Dockerfile and the context files `.dockerignore` does not exclude.

Used by `workbench build --watch` and the TUI; watchfiles (inotify underneath) does the watching.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from workbench.engine import Engine

DEBOUNCE_MS = 400
"""Changes arriving within this window are grouped into one rebuild."""
STEP_MS = 15
"""A change is reported once no new change came for this long (the edit-to-rerun latency floor)."""


class InputFilter:
    """Decides whether a changed path is an input of the build (re-reads .dockerignore when it changes)."""

    def __init__(self, context: Path, dockerfile: Path) -> None:
        self.context = context.resolve()
        self.dockerfile = dockerfile.resolve()
        self._ignore_files = {self.context / ".dockerignore",
                              self.dockerfile.with_name(self.dockerfile.name + ".dockerignore")}
        self._stamp: tuple[float, ...] = ()
        self._matcher: Callable[[str], bool] | None = None

    def _excluded(self) -> Callable[[str], bool] | None:
        from workbench.frontend.dockerfile.dockerignore import load_dockerignore
        from workbench.fsutil.patterns import IgnoreMatcher

        stamp = tuple(_mtime(p) for p in sorted(self._ignore_files))
        if stamp != self._stamp:
            self._stamp = stamp
            matcher = IgnoreMatcher(load_dockerignore(self.context, self.dockerfile))
            self._matcher = matcher.excluded if matcher else None
        return self._matcher

    def __call__(self, change: object, path: str) -> bool:
        p = Path(path)
        if p == self.dockerfile or p in self._ignore_files:
            return True
        name = p.name
        if name.endswith(("~", ".swp", ".swx")) or name.startswith(".#") or "/.git/" in path + "/":
            return False  # editor and VCS scratch files
        try:
            rel = p.relative_to(self.context).as_posix()
        except ValueError:
            return False
        excluded = self._excluded()
        return not (excluded and excluded(rel))


def _mtime(p: Path) -> float:
    try:
        return os.stat(p).st_mtime
    except OSError:
        return -1.0


def watch_inputs(context: Path, dockerfile: Path, stop: threading.Event) -> Iterator[list[str]]:
    """Yield the changed input paths (sorted), one list per debounced group of changes, until `stop` is set."""
    from watchfiles import watch

    keep = InputFilter(context, dockerfile)
    paths = {str(keep.context)} if keep.context.is_dir() else set()
    if not any(keep.dockerfile.is_relative_to(p) for p in paths):
        paths.add(str(keep.dockerfile.parent))
    for changes in watch(*sorted(paths), watch_filter=keep, debounce=DEBOUNCE_MS, step=STEP_MS, stop_event=stop,
                         rust_timeout=500, yield_on_timeout=False, raise_interrupt=False):
        yield sorted({path for _, path in changes})


def run_watch(make_request: Callable[[threading.Event], object], context: Path, dockerfile: Path,
              out: TextIO = sys.stderr, engine: Engine | None = None) -> int:
    """`workbench build --watch`: build, then rebuild on every change (a running build is canceled first).

    Plain progress for each build; returns 130 when interrupted (Ctrl-C), the only way it ends.
    """
    from workbench.errors import format_failure
    from workbench.history.recorder import recording_engine
    from workbench.progress.events import EventBus
    from workbench.progress.printers import make_printer
    from workbench.request import BuildFailure, BuildRequest

    engine = engine or recording_engine()

    current: list[tuple[threading.Thread, threading.Event]] = []

    def start() -> None:
        cancel = threading.Event()
        request = make_request(cancel)
        assert isinstance(request, BuildRequest)

        def build() -> None:
            bus = EventBus()
            bus.subscribe(make_printer("plain", out))
            try:
                engine.build(request, bus)
                print("build finished; watching for changes (Ctrl-C to stop)", file=out, flush=True)
            except BuildFailure as e:
                if e.message != "canceled" or not cancel.is_set():
                    print(format_failure(e.message, e.location, "", e.dockerfile_text), file=out, flush=True)
                    print("watching for changes (Ctrl-C to stop)", file=out, flush=True)

        thread = threading.Thread(target=build, name="watch-build", daemon=True)
        current[:] = [(thread, cancel)]
        thread.start()

    def stop_current() -> None:
        for thread, cancel in current:
            cancel.set()
            thread.join()

    stop = threading.Event()
    start()
    try:
        for changed in watch_inputs(context, dockerfile, stop):
            shown = ", ".join(_relative(p, context) for p in changed[:5]) + (" ..." if len(changed) > 5 else "")
            print(f"change detected: {shown}: rebuilding", file=out, flush=True)
            stop_current()
            start()
    except KeyboardInterrupt:
        pass
    stop.set()
    stop_current()
    print("stopped watching", file=out, flush=True)
    return 130


def _relative(path: str, context: Path) -> str:
    try:
        return Path(path).relative_to(context.resolve()).as_posix()
    except ValueError:
        return path
