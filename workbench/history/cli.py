"""`workbench history …` and `workbench replay …` (argparse wiring; the work is in the sibling modules)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.history.store import RecordedSession

ROOT_HELP = "state directory (default: /var/lib/workbench for root, else $XDG_DATA_HOME/workbench)"


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `history` and `replay` to the top-level subcommands."""
    h = sub.add_parser("history", help="recorded builds (like docker buildx history)",
                       description="Every build is recorded under ROOT/history. Retention: the newest "
                       "$WORKBENCH_HISTORY_MAX_ENTRIES (50) records younger than $WORKBENCH_HISTORY_MAX_AGE "
                       "(48h) are kept; WORKBENCH_HISTORY=0 turns recording off.")
    hs = h.add_subparsers(dest="history_command", required=True)
    ref_help = "a build id (or unique prefix), ^N (the Nth before the newest), or a session folder"

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        p = hs.add_parser(name, help=help)
        p.add_argument("--root", help=ROOT_HELP)
        return p

    cmd("ls", "list the recorded builds, newest first").add_argument("--format", choices=["table", "json"],
                                                                   default="table")
    cmd("show", "a build's summary, slowest steps and cache misses with reasons").add_argument("ref", help=ref_help)
    p = cmd("logs", "a build's output (as --progress plain printed it), or one step's")
    p.add_argument("ref", help=ref_help)
    p.add_argument("step", nargs="?", help="#N, a digest (prefix) or a name: print only this step's output")
    p.add_argument("--progress", choices=["plain", "rawjson", "tty"], default="plain")
    p = cmd("rm", "remove build records")
    p.add_argument("refs", nargs="*", metavar="ref", help=ref_help)
    p.add_argument("--all", action="store_true", help="remove every record")
    p = cmd("export", "write a build's session as a tar archive (.tar.gz/.tgz: compressed)")
    p.add_argument("ref", help=ref_help)
    p.add_argument("file", help="the archive to write (- for stdout)")
    p = cmd("import", "add an exported session to the history")
    p.add_argument("file", help="an archive from `history export`")
    p = cmd("trace", "a build as OpenTelemetry OTLP/JSON (load it into Jaeger)")
    p.add_argument("ref", help=ref_help)
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p = cmd("diff", "which steps changed cache state between two builds, and why")
    p.add_argument("a", help=ref_help)
    p.add_argument("b", help=ref_help)

    r = sub.add_parser("replay", help="replay a recorded build without executing anything")
    r.add_argument("session", help="a session folder (sessions/NAME), an exported archive, or a history ref")
    r.add_argument("--progress", choices=["plain", "rawjson", "tty"],
                   help="replay as text (at once, or timed with --speed) instead of in the TUI")
    r.add_argument("--speed", type=float, default=None,
                   help="playback rate: 1 = as recorded, 4 = four times faster (text: default at once)")
    r.add_argument("--root", help=ROOT_HELP)


def _root(args: argparse.Namespace) -> Path:
    from workbench.request import default_root

    return Path(args.root) if args.root else default_root()


def _fail(message: str) -> int:
    print(f"workbench: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from workbench.history.store import HistoryError

    try:
        if args.command == "replay":
            return _replay(args)
        return _history(args)
    except HistoryError as e:
        return _fail(str(e))
    except BrokenPipeError:
        return 0


def _load(args: argparse.Namespace, ref: str) -> RecordedSession:
    from workbench.history.recorder import history_dir
    from workbench.history.store import load_session, resolve

    return load_session(resolve(history_dir(_root(args)), ref))


def _history(args: argparse.Namespace) -> int:
    import json

    from workbench.history import report, store
    from workbench.history.recorder import history_dir

    history = history_dir(_root(args))
    what = args.history_command
    if what == "ls":
        records = store.list_sessions(history)
        if args.format == "json":
            docs = [{"id": s.id, "started": s.started, "status": s.status, "duration": report.duration(s),
                     "steps": report.counts(s), "target": s.meta.get("target", ""),
                     "dockerfile": s.meta.get("dockerfile", ""), "engine": s.meta.get("engine", "local")}
                    for s in records]
            print(json.dumps(docs, indent=1))
        else:
            sys.stdout.write(report.format_ls(records))
        return 0
    if what == "show":
        sys.stdout.write(report.format_show(_load(args, args.ref)))
        return 0
    if what == "logs":
        s = _load(args, args.ref)
        if args.step:
            from workbench.history.steps import fold

            steps = fold(s.events)
            st = steps.find(args.step)
            if st is None:
                return _fail(f"build {s.id} has no step {args.step!r} (see `workbench history show {s.id}`)")
            sys.stdout.flush()
            sys.stdout.buffer.write(st.log_text())
            return 0
        sys.stdout.write(report.plain_output(s, args.progress))
        return 0
    if what == "rm":
        if args.all:
            targets = [s.path for s in store.list_sessions(history)]
        elif args.refs:
            targets = [store.resolve(history, ref) for ref in args.refs]
            for t in targets:
                if t.parent.resolve() != history.resolve():
                    return _fail(f"{t} is not a record of {history}")
        else:
            return _fail("history rm: give build ids or --all")
        for t in targets:
            store.remove(t)
            print(t.name)
        return 0
    if what == "export":
        return _export(store.resolve(history, args.ref), args.file)
    if what == "import":
        return _import(history, Path(args.file))
    if what == "trace":
        from workbench.history.trace import otlp_trace

        text = json.dumps(otlp_trace(_load(args, args.ref)), indent=1) + "\n"
        if args.output:
            Path(args.output).write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    if what == "diff":
        from workbench.history.diff import format_diff

        sys.stdout.write(format_diff(_load(args, args.a), _load(args, args.b)))
        return 0
    return 2


def _export(folder: Path, file: str) -> int:
    import tarfile

    from workbench.history.store import session_folder

    folder = session_folder(folder)
    name = folder.parent.name if folder.name == "session" else folder.name
    compress = file.endswith((".gz", ".tgz"))
    if file == "-":
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|gz") as tar:
            tar.add(folder, arcname=name)
        return 0
    with tarfile.open(file, "w:gz" if compress else "w") as tar:
        tar.add(folder, arcname=name)
    print(f"exported {name} to {file}", file=sys.stderr)
    return 0


def _import(history: Path, archive: Path) -> int:
    import shutil

    from workbench.history.recorder import RECORD_ID, new_id
    from workbench.history.store import load_session
    from workbench.state_root import make_private_dir

    if not archive.is_file():
        return _fail(f"{archive}: no such file")
    s = load_session(archive)
    # The id comes from the archive's meta.json: only a record id of our own form names a folder here (an
    # id like `../../root/.ssh` or `/etc` must never become a path), else the record gets a new one.
    ident = s.id if isinstance(s.id, str) and RECORD_ID.fullmatch(s.id) else new_id()
    dest = history / (ident if not (history / ident).exists() else new_id())
    make_private_dir(history)
    shutil.copytree(s.path, dest, symlinks=True, copy_function=_copy_private)
    os.chmod(dest, 0o700)
    print(dest.name)
    return 0


def _copy_private(src: str, dst: str) -> None:
    import shutil

    shutil.copyfile(src, dst, follow_symlinks=False)
    os.chmod(dst, 0o600)


def _replay(args: argparse.Namespace) -> int:
    from workbench.history.recorder import history_dir
    from workbench.history.store import load_session, resolve

    path = Path(args.session)
    if not path.exists():
        path = resolve(history_dir(_root(args)), args.session)
    s = load_session(path)
    if args.progress:
        from workbench.history.report import closing_error, plain_output

        if args.speed:
            from workbench.progress.replay import replay_timed

            replay_timed(s.events, args.progress, sys.stdout, args.speed)
            sys.stdout.write(closing_error(s))
        else:
            sys.stdout.write(plain_output(s, args.progress))
        return 0
    return _replay_tui(s, args.speed or 1.0)


def _replay_tui(s: RecordedSession, speed: float) -> int:
    """Open the TUI on the session, with a timeline (workbench.tui.replay_app)."""
    from workbench.progress.replay import EventSource

    try:
        from workbench.tui.replay_app import run_replay
    except ImportError as e:
        print(f"workbench replay: the TUI is not available ({e}); use --progress plain (or tty, rawjson) "
              "to replay as text", file=sys.stderr)
        return 2
    return run_replay(s, EventSource(s.events, speed=speed))
