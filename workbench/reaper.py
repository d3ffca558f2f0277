"""A build's reaper: a small process that cleans up after the build the moment it dies, however it died.

Containers run detached from the build (`runc run --detach`), so a build killed with SIGKILL — or a build
server child whose client went away — would leave them running, with their overlay mounts, until the next
build on the root noticed. `ensure_reaper` starts, once per process and state root, a reaper holding the
read end of a pipe whose write end only the build holds; when the build dies the kernel closes that end,
the read returns, and the reaper kills and deletes the build's containers, unmounts and removes its temp
dirs (`ROOT/tmp/<pid>-…`). A build that ends normally has removed them already; the reaper then exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from workbench.snapshot.scratch import remove_scratch

_started: set[str] = set()
_lock = threading.Lock()
_keep: list[int] = []  # write ends, held until the process exits


def ensure_reaper(tmp: Path) -> None:
    """Make sure a reaper will clean this process's entries of `tmp` (ROOT/tmp) when the process dies."""
    key = os.path.realpath(tmp)
    with _lock:
        if key in _started:
            return
        read_end, write_end = os.pipe()  # both close-on-exec: containers and runc never hold them
        try:
            # -P and cwd=/: never import a `workbench/` folder of the build's current directory
            subprocess.Popen([sys.executable, "-P", "-m", "workbench.reaper", str(read_end), key, str(os.getpid())],
                             pass_fds=(read_end,), cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            os.close(write_end)
            return  # no reaper: the next build's stale clean-up remains the safety net
        finally:
            os.close(read_end)
        _keep.append(write_end)
        _started.add(key)


def reap(tmp: Path, pid: int) -> None:
    """Kill, unmount and remove what process `pid` left in `tmp`."""
    try:
        entries = [e for e in tmp.iterdir() if e.name.split("-", 1)[0] == str(pid)]
    except OSError:
        return
    for entry in entries:
        remove_scratch(entry)


def main(argv: list[str]) -> int:
    fd, tmp, pid = int(argv[0]), Path(argv[1]), int(argv[2])
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)  # a Ctrl-C or a closed terminal must not take the reaper first
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    reap(tmp, pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
