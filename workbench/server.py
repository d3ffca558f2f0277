"""The resident build server: the engine imported once, a forked child per `workbench build`.

See workbench.client for why. The server itself runs no build and holds no state besides imported
modules: every request gets a fresh child (own process group) that takes over the client's stdio,
working directory, environment and umask and then runs the ordinary CLI code path. The child is forked
ahead of its request (one spare waits at a time), and has made the memory it shares with the server its
own while it waited: a build waits neither for the fork nor for the copy-on-write faults. A client that
disappears (killed) closes its socket, and the child kills itself just as the in-process build would
have died. The server exits when idle for a while, when its code is older than the client's, or on
`workbench server stop`.

Run by the CLI as `python -m workbench.server --socket PATH`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import sys
import threading
import time

from workbench.client import code_stamp, private_dir
from workbench.context_watch import ContextWatcher
from workbench.wire import recv_message, send_message

IDLE_EXIT_S = 15 * 60


def preload() -> None:
    """Import what a build needs, so a child starts warm."""
    import workbench.build  # noqa: F401
    import workbench.cli
    import workbench.gc  # noqa: F401

    workbench.cli.PARSER = workbench.cli._build_parser()
    import workbench.frontend.dockerfile.checks  # noqa: F401
    import workbench.frontend.dockerfile.convert  # noqa: F401
    import workbench.image.pull  # noqa: F401
    import workbench.image.push  # noqa: F401
    import workbench.lint  # noqa: F401
    import workbench.progress.printers  # noqa: F401
    import workbench.solver.solver  # noqa: F401

    for name in ("workbench.engine", "workbench.history.recorder", "workbench.history.store", "workbench.cdi.context",
                 "workbench.image.store", "workbench.exporter.outputs", "workbench.solver.runners",
                 "workbench.executor.runc", "workbench.solver.mounts", "workbench.snapshot.layers",
                 "workbench.inspect", "workbench.solver.context_memo", "workbench.worker", "workbench.snapshot.manager",
                 "workbench.frontend.dockerfile.dockerignore", "workbench.solver.transfer", "workbench.diskfull",
                 "workbench.errors", "workbench.http.client", "urllib3", "urllib.request", "http.client", "ssl",
                 "tomllib", "encodings.idna", "mimetypes", "zipfile", "importlib.metadata"):
        try:
            __import__(name)
        except ImportError:  # an optional part: the child imports what it needs anyway
            pass
    _preload_remote()
    _warm_up()


REMOTE_MODULES = ("engine", "control", "channel", "solve", "status", "graph", "marshal", "marshal_caps", "marshal_ops",
                  "marshal_errors", "dockerpush", "proto.control_pb2", "proto.ops_pb2", "proto.worker_pb2",
                  "session.services", "session.h2server", "session.filesync", "session.filesend", "session.secrets",
                  "session.sshforward", "session.auth", "session.health", "session.pipe", "explain")
# what grpc imports on its first channel, not on `import grpc`
GRPC_MODULES = ("grpc", "grpc._channel", "grpc._simple_stubs", "grpc.experimental", "encodings.ascii")


def _preload_remote() -> None:
    """grpc, the protos and the BuildKit client, for `build --addr` (served by a child like any build).

    Only imported: the server opens no channel, so grpc's core never starts here (no threads, no sockets) and
    each child starts its own after the fork, as a fresh process would. grpc's fork support stays off: it is
    for processes that fork while a channel is open, and its fork hooks would only slow the children's forks.
    """
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # as workbench.remote.channel sets it before its import
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    for name in (*GRPC_MODULES, *(f"workbench.remote.{m}" for m in REMOTE_MODULES)):
        try:
            __import__(name)
        except ImportError:  # a part this version lacks: the child imports what it needs anyway
            pass


_SAMPLE = """# syntax=docker/dockerfile:1
FROM base AS build
ARG VERSION=1
ENV APP=/app PATH=/usr/bin:$PATH
WORKDIR $APP
COPY --chown=0:0 src/ ./src/
RUN --mount=type=cache,target=/root/.cache echo "$VERSION" > version && ls -la
FROM base
COPY --from=build /app /app
USER 1000
CMD ["/app/run"]
"""


def _warm_up() -> None:
    """Parse, check and convert a typical Dockerfile once, so that every child starts with the regular
    expressions and lookup caches a build fills already made (no registry, no files are touched)."""
    from workbench.frontend.dockerfile.convert import ConvertOptions, convert
    from workbench.lint import lint

    def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, object]]:
        return ref, "sha256:" + "0" * 64, {"architecture": "amd64", "os": "linux", "config": {"Env": []}}

    try:
        lint(_SAMPLE, build_args={}, target=None, ignore=None, resolve=resolve)
        convert(_SAMPLE, ConvertOptions(build_args={}, target=None, filename="Dockerfile"), resolve)
    except Exception:  # noqa: BLE001 - a warm-up only; a real build reports its own errors
        pass


def serve(path: str) -> int:
    os.umask(0o077)  # the server's own files are private; each build child takes its client's umask
    folder = _open_private_dir(os.path.dirname(path) or ".")
    if folder is None:
        return 1  # builds then run in-process; `workbench server status` says why
    try:
        # through the folder we checked, never a link: another user must not have us create or lock a file
        lock = os.open(os.path.basename(path) + ".lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC,
                       0o600, dir_fd=folder)
    except OSError:
        os.close(folder)
        return 1
    deadline = time.monotonic() + 5  # an old server that was just told it is stale may still be leaving
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                return 0  # another server is running
            time.sleep(0.05)
    stamp = code_stamp()
    if os.geteuid() != 0:
        from workbench.rootless.userns import UsernsError, enter

        try:
            enter()  # once: every build child is forked inside already
        except UsernsError:
            return 1  # builds then run in-process and say why
    preload()
    import gc

    gc.collect()
    gc.freeze()  # what the server holds is never collected: children neither scan it nor copy its pages
    name = os.path.basename(path)
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bound in the folder we checked (its descriptor's /proc link pins it), made 0600 by bind() itself: a chmod
    # by path afterwards could follow a link
    pinned = f"/proc/self/fd/{folder}/{name}"
    os.umask(0o177)
    try:
        listener.bind(pinned if os.path.isdir(f"/proc/self/fd/{folder}") else path)
    finally:
        os.umask(0o077)
    bound = os.stat(name, dir_fd=folder, follow_symlinks=False).st_ino
    listener.listen(64)
    children: set[int] = set()
    channels: dict[socket.socket, int] = {}  # a build's socket for context lookups -> its pid
    watcher = ContextWatcher()
    last_active = time.monotonic()
    spare: _Spare | None = None

    def fork_spare(also_close: tuple[int, ...] = ()) -> _Spare:
        """A new spare child; `also_close`: descriptors of ours it must not keep (a request's, which it is
        handed over its socket if at all)."""
        ours, theirs = socket.socketpair()
        handover, waiting_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            for fd in also_close:
                os.close(fd)
            listener.close()
            os.close(lock)
            os.close(folder)
            ours.close()
            handover.close()
            for channel in channels:
                channel.close()
            if spare is not None:
                spare.close()
            if watcher.fd is not None:
                os.close(watcher.fd)
            _wait_as_spare(waiting_end, theirs)  # never returns
        theirs.close()
        waiting_end.close()
        return _Spare(pid, ours, handover)

    try:
        spare = fork_spare()
        while True:
            watched = [watcher.fd] if watcher.fd is not None else []
            waiting: list[socket.socket | int] = [listener, *channels, *watched]
            ready, _, _ = select.select(waiting, [], [], 5.0)
            _reap(children)
            if spare is not None and not spare.alive():
                spare.close()
                spare = None
            if not ready:
                if not children and time.monotonic() - last_active > IDLE_EXIT_S:
                    return 0
                continue
            for channel in [r for r in ready if isinstance(r, socket.socket) and r in channels]:
                if not _answer(channel, watcher):
                    del channels[channel]
                    channel.close()
            if watched and watched[0] in ready:
                watcher.drain()
            if listener not in ready:
                continue
            conn, _ = listener.accept()
            last_active = time.monotonic()
            try:
                request, fds = recv_message(conn, with_fds=3)
            except ValueError:  # a client of another version: let it start its own server
                conn.close()
                return 0
            except OSError:
                conn.close()
                continue
            if request is not None and request.get("stop"):
                send_message(conn, {"stopped": os.getpid()})
                _close(conn, fds)
                return 0
            if request is None or len(fds) != 3:  # connected and left (`server status`), or no stdio passed
                _close(conn, fds)
                continue
            # the CLI stamped the code just now: one that differs from ours means it changed since we started
            # (walking the package again here would only add a millisecond to every build)
            if request.get("stamp") != stamp:
                send_message(conn, {"stale": True})
                _close(conn, fds)
                return 0
            child = spare if spare is not None and spare.hand_over(request, conn, fds) else None
            if child is None:  # the spare died: a new child, as if there had been none
                if spare is not None:
                    spare.close()
                    children.add(spare.pid)  # reaped with the others
                spare = None
                child = fork_spare(also_close=(conn.fileno(), *fds))
                if not child.hand_over(request, conn, fds):
                    child.close()
                    children.add(child.pid)
                    _close(conn, fds)
                    continue
            children.add(child.pid)
            channels[child.channel] = child.pid
            _close(conn, fds)
            spare = fork_spare()  # the next build's, made ready while this one runs
    finally:
        if spare is not None:
            spare.close()  # it sees the end of its socket and exits
        watcher.close()
        listener.close()
        try:
            if os.stat(name, dir_fd=folder, follow_symlinks=False).st_ino == bound:  # a newer server may own it
                os.unlink(name, dir_fd=folder)
        except OSError:
            pass


def _open_private_dir(path: str) -> int | None:
    """The socket's folder, made 0700 if absent, as a descriptor; None when it is not ours alone.

    Checked on the descriptor itself (no link followed), because the client checked it earlier and another
    local user who saw our command line may have made it, or a link in it, since.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:  # its parent ($XDG_RUNTIME_DIR) is missing too
        try:
            os.makedirs(path, 0o700)
        except OSError:
            return None
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if private_dir(os.fstat(fd)):
        return fd
    os.close(fd)
    return None


def _answer(channel: socket.socket, watcher: ContextWatcher) -> bool:
    """Serve one request of a build about its context; False when the build is gone."""
    try:
        message, _ = recv_message(channel)
        if message is None:
            return False
        if "lookup" in message:
            ident = message["ident"]
            generation, memo = watcher.lookup(message["lookup"], (ident[0], ident[1]), message["sig"])
            send_message(channel, {"gen": generation, "memo": memo})
        elif "store" in message:
            watcher.store(message["store"], message["sig"], message["gen"], message["memo"])
        return True
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def _close(conn: socket.socket, fds: list[int]) -> None:
    conn.close()
    for fd in fds:
        os.close(fd)


def _reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            children.discard(pid)


class _Spare:
    """A child forked ahead of the next request, waiting for it (and its client's socket and stdio) on
    `handover`; `channel` is our end of its context-lookup socket. Meanwhile it has made the memory it shares
    with the server its own (`_own_memory`), so a build neither waits for a fork nor pays for the copies."""

    def __init__(self, pid: int, channel: socket.socket, handover: socket.socket) -> None:
        self.pid, self.channel, self.handover = pid, channel, handover

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False

    def hand_over(self, request: dict, conn: socket.socket, fds: list[int]) -> bool:
        """Give it the request; False if it is gone (then nothing was handed over)."""
        try:
            send_message(self.handover, {"request": request}, [conn.fileno(), *fds])
        except OSError:
            return False
        self.handover.close()
        return True

    def close(self) -> None:
        """Unused: it is told to go (its hand-over socket ends) and reaped later."""
        self.handover.close()
        self.channel.close()


MADV_POPULATE_WRITE = 23
"""madvise(2): fault the range in, writable, as writing each page would (Linux 5.14)."""
_OWN_CHUNK = 1 << 20


def _prepare_spare(stop: threading.Event) -> list[threading.Thread]:
    """Start a spare's preparation until `stop` is set (a build has come); returns its threads. A thread at
    SCHED_IDLE (it only takes a core nothing else wants, never time from a build, ours or another's) makes the
    memory ours (`_own_memory`); then another, at the usual priority (threads inherit their creator's policy,
    and grpc's own must not starve on a busy machine), starts grpc's core."""
    owned = threading.Event()
    regions = writable_regions()

    def own() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only
        except (OSError, AttributeError):
            pass
        try:
            _own_memory(stop, regions)
        finally:
            owned.set()

    def start_grpc() -> None:
        owned.wait()
        if not stop.is_set():
            _start_grpc()

    threads = [threading.Thread(target=own, name="spare-memory", daemon=True)]
    if "grpc" in sys.modules:
        threads.append(threading.Thread(target=start_grpc, name="spare-grpc", daemon=True))
    for thread in threads:
        thread.start()
    return threads


_OWN_AT_MOST = 256 << 20
"""No more than this is made ours: a large private mapping nobody touched (a reservation) is left alone."""


def writable_regions() -> list[tuple[int, int]]:
    """This process's private writable mappings, (start, end), other than the main thread's stack, each under
    `_OWN_AT_MOST`. Read before a spare starts its threads, so that their stacks are not among them."""
    regions = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                name = fields[5] if len(fields) > 5 else ""
                if fields[1].startswith("rw") and fields[1][3] == "p" and name not in ("[stack]", "[vvar]"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    if end - start < _OWN_AT_MOST:
                        regions.append((start, end))
    except (OSError, ValueError, IndexError):
        return []
    return regions


def _own_memory(stop: threading.Event, regions: list[tuple[int, int]]) -> None:
    """Make the pages of `regions` this process's own now (the copies copy-on-write makes as a forked child
    writes: some thousands of page faults in a build that Python's reference counts touch everywhere), a
    chunk at a time, until `stop` is set or `_OWN_AT_MOST` bytes are done."""
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return
    budget = _OWN_AT_MOST
    for start, end in regions:
        for at in range(start, end, _OWN_CHUNK):
            size = min(_OWN_CHUNK, end - at)
            if stop.is_set() or budget < size:
                return
            budget -= size
            if madvise(at, size, MADV_POPULATE_WRITE) != 0 and ctypes.get_errno() == errno.EINVAL:
                break  # a mapping it does not apply to (or a kernel without it)


def _start_grpc() -> None:
    """Start grpc's core (its first channel starts it: some milliseconds) before a remote build needs it."""
    import grpc

    try:
        grpc.insecure_channel("unix:///nonexistent/workbench-warm-up").close()  # never connects
    except Exception:  # noqa: BLE001 - a warm-up only
        pass


def _wait_as_spare(handover: socket.socket, channel: socket.socket) -> None:
    """A spare child: prepare (`_prepare_spare`) while it waits for a request, then run it as `_child`; exits
    when the server's end of `handover` closes first."""
    stop = threading.Event()
    _prepare_spare(stop)
    try:
        message, fds = recv_message(handover, with_fds=4)
    except BaseException:  # noqa: BLE001 - nothing was handed over: there is no one to tell
        os._exit(1)
    stop.set()  # (a chunk it is in may finish while the build starts, on an idle core)
    if message is None or len(fds) != 4:
        os._exit(0)
    handover.close()
    _child(socket.socket(fileno=fds[0]), fds[1:], message["request"], channel)


def _child(conn: socket.socket, fds: list[int], request: dict, channel: socket.socket) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        from workbench.solver import context_memo

        context_memo.attach(channel)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH,
                    signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _reopen_stdio()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(int(request["umask"]))
        sys.argv = ["workbench", *request["argv"]]
        send_message(conn, {"pid": os.getpid()})
        threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
        from workbench.cli import main

        try:
            code = main(request["argv"], via_server=True)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    except BaseException:  # noqa: BLE001 - report it on the client's stderr, as an in-process run would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _finish_like_an_interpreter()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass
        _let_go_of_stdio()
        try:
            send_message(conn, {"exit": code})
        except OSError:
            pass
        os._exit(code)


def _let_go_of_stdio() -> None:
    """Put /dev/null where the client's stdin, stdout and stderr were: once the client has exited, whatever reads
    its output (a pipe, `$(...)`) sees the end at once, not only when this process has finished tearing down."""
    try:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    for fd in (0, 1, 2):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def _finish_like_an_interpreter() -> None:
    """What Python does at exit and os._exit skips: wait for non-daemon threads, run atexit handlers."""
    import atexit

    try:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - exit handlers must not keep the status from the client
        pass


def _reopen_stdio() -> None:
    """sys.std* were made for the server's /dev/null; rebuild them for the client's descriptors."""
    line = os.isatty(1)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1 if line else -1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1,  # noqa: SIM115
                      closefd=False)


def _die_with_client(conn: socket.socket) -> None:
    """The client went away (SIGKILL, closed terminal): end as the in-process build would have."""
    try:
        while conn.recv(1024):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="workbench-server")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    return serve(args.socket)


if __name__ == "__main__":
    sys.exit(main())
