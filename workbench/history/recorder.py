"""Records every build as a session under ROOT/history/<id>/ (what `workbench history` and `replay` read).

A session folder holds:
  meta.json     the request: Dockerfile and context paths, target, build args, outputs, secret and ssh *ids*
  Dockerfile    the Dockerfile as it was built
  events.jsonl  every event, one JSON line each, appended and written through per event (a crash loses at
                most the event being written)
  llb.jsonl     the build graph with source maps, as `workbench inspect llb` prints it
  result.json   how it ended (written last; a killed build has none)
Secret values never get here: the recorder sits behind a RedactingBus, and the request is recorded without
them (see workbench.progress.redact).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.frontend.dockerfile.source import DockerfileReadError, read_dockerfile
from workbench.history.codec import dumps_event
from workbench.progress.events import (
    BuildWarning,
    Event,
    EventBus,
    VertexCached,
    VertexCompleted,
    VertexEvent,
    VertexFailed,
    VertexStarted,
)
from workbench.progress.redact import Redactor
from workbench.state_root import make_private_dir, write_private

if TYPE_CHECKING:
    from workbench.engine import LocalEngine
    from workbench.llb.ops import Vertex
    from workbench.request import BuildRequest, BuildResult

FORMAT_VERSION = 1
_STATES = {VertexStarted: "running", VertexCached: "cached", VertexCompleted: "done", VertexFailed: "error"}
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
RECORD_ID = re.compile(r"[0-9a-z]{25}")
"""What `new_id` makes; an id of any other form (an imported record's, say) is never used as a path."""


def history_dir(root: Path) -> Path:
    return root / "history"


def new_id() -> str:
    """A 25-character lowercase id, as BuildKit's identity.NewID() makes build refs."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(25))


def write_json(path: Path, doc: Any) -> None:
    """Write atomically: a reader never sees half a file."""
    # a Dockerfile's bytes that are not UTF-8 are lone surrogates here: written as JSON's \udcXX escapes
    write_private(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))


class Recorder:
    """A sink that appends each event to events.jsonl, plus the rest of the session around the build."""

    def __init__(self, directory: Path, redactor: Redactor) -> None:
        self.dir = directory
        self.id = directory.name
        self.redactor = redactor
        self._fd: int | None = os.open(directory / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.states: dict[str, str] = {}
        """Each vertex's last state, for the step counts in result.json."""
        self.meta: dict[str, Any] = {}
        """What meta.json holds (kept to name the engine once it is known)."""

    def __call__(self, event: Event) -> None:
        if self._fd is None:
            return
        if isinstance(event, VertexEvent) and (state := _STATES.get(type(event))):
            if isinstance(event, VertexFailed) and event.error.endswith("canceled"):
                state = "canceled"
            self.states[event.vertex] = state
        try:
            os.write(self._fd, (dumps_event(event) + "\n").encode("utf-8", "surrogateescape"))
        except OSError:  # a full disk must not fail the build; the session just ends here
            self.close()

    def set_engine(self, engine: str) -> None:
        """Names the engine in meta.json (a remote daemon's version is asked while the build starts)."""
        self.meta["engine"] = self.redactor.text(engine)
        try:
            write_json(self.dir / "meta.json", self.meta)
        except OSError:
            pass

    def record_llb(self, target: Vertex, dockerfile_text: str) -> None:
        """The converted graph with its Dockerfile lines (called once the frontend has converted)."""
        from workbench.inspect import vertex_json

        lines = dockerfile_text.splitlines()
        text = "".join(vertex_json(v, lines) + "\n" for v in target.walk())
        try:
            write_private(self.dir / "llb.jsonl", self.redactor.text(text).encode("utf-8", "backslashreplace"))
        except OSError:
            pass

    def finish(self, status: str, duration: float, *, result: BuildResult | None = None,
               error: str = "", location: Any = None, step: str = "", exception: str = "") -> None:
        states = list(self.states.values())
        doc: dict[str, Any] = {"status": status, "finished": time.time(), "duration": round(duration, 6),
                               "steps": {"total": len(states), "cached": states.count("cached"),
                                         "failed": states.count("error")}}
        if result is not None:
            doc.update(manifest_digest=result.manifest_digest, steps_run=result.steps_run)
        if error:
            doc["error"] = self.redactor.text(error)
        if location is not None:
            doc["location"] = {"filename": location.filename, "start_line": location.start_line,
                               "end_line": location.end_line}
        if step:
            doc["step"] = self.redactor.text(step)
        if exception:
            doc["exception"] = exception  # not a BuildFailure: the CLI printed a traceback, not a located error
        try:
            write_json(self.dir / "result.json", doc)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _request_meta(req: BuildRequest, session_id: str, redactor: Redactor) -> dict[str, Any]:
    s = req.session
    return redactor.value({
        "version": FORMAT_VERSION,
        "id": session_id,
        "started": time.time(),
        "pid": os.getpid(),
        "context": str(req.context.absolute()),
        "dockerfile": str(req.dockerfile.absolute()),
        "dockerfile_name": req.dockerfile.name,
        "target": req.target or "",
        "build_args": dict(req.build_args),
        "outputs": [{"type": o.type, **o.attrs} for o in req.outputs],
        "no_cache": req.no_cache,
        "secrets": sorted(s.secrets),  # ids only, never values or where they came from
        "ssh": sorted(s.ssh),
        "entitlements": sorted(s.entitlements),
        "engine": req.engine,
        # the views clip step logs by this (printers.log_limit); a replay clips the same way
        "step_log_max_size": os.environ.get("BUILDKIT_STEP_LOG_MAX_SIZE", ""),
    })


def recording_enabled() -> bool:
    return os.environ.get("WORKBENCH_HISTORY", "1") not in ("0", "false", "no", "off")


def recording_engine() -> LocalEngine:
    """The local engine with each build recorded here and its secret values redacted: what the front ends run."""
    from workbench.engine import LocalEngine

    return LocalEngine(recorder=Recording.start)


class Recording:
    """A build's workbench.request.BuildRecorder: the session's recorder (None when recording is off)."""

    def __init__(self, recorder: Recorder | None) -> None:
        self.recorder = recorder

    @classmethod
    def start(cls, req: BuildRequest, bus: EventBus, redactor: Redactor) -> Recording:
        """Open a session for `req` that records what `bus` carries (secret values already masked there);
        `redactor` masks them in the request and the Dockerfile it keeps."""
        if not recording_enabled():
            return cls(None)
        try:
            directory = history_dir(req.root) / new_id()
            make_private_dir(directory.parent)
            directory.mkdir(mode=0o700)
            meta = _request_meta(req, directory.name, redactor)
            write_json(directory / "meta.json", meta)
            try:
                text = read_dockerfile(req.dockerfile)  # not a FIFO: that would block here forever
                write_private(directory / "Dockerfile", redactor.data(text.encode("utf-8", "surrogateescape")))
            except (OSError, DockerfileReadError):
                pass  # the build reports an unreadable Dockerfile itself
            recorder = Recorder(directory, redactor)
            recorder.meta = meta
        except OSError as e:
            bus.emit(BuildWarning(f"build history is not recorded: {e}"))
            return cls(None)
        bus.subscribe(recorder)
        return cls(recorder)

    def set_engine(self, engine: str) -> None:
        if self.recorder:
            self.recorder.set_engine(engine)

    def record_llb(self, target: Vertex, dockerfile_text: str) -> None:
        if self.recorder:
            self.recorder.record_llb(target, dockerfile_text)

    def finish(self, status: str, duration: float, **kw: Any) -> None:
        """Write result.json, apply the history retention and stop recording."""
        if not self.recorder:
            return
        self.recorder.finish(status, duration, **kw)
        self.recorder.close()
        from workbench.history.store import apply_retention

        try:
            apply_retention(self.recorder.dir.parent, keep=self.recorder.id)
        except OSError:
            pass
