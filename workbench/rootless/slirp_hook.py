"""An OCI hook run by runc (by path, standard library only): `start PIDFILE` connects the new container's
network namespace (its pid on stdin, in the OCI state) to the outside through slirp4netns and returns once the
tap device is configured; `stop PIDFILE` ends that slirp4netns."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys


def start(pidfile: str) -> int:
    pid = json.load(sys.stdin)["pid"]
    ready_r, ready_w = os.pipe()
    log = pidfile + ".log"
    with open(log, "wb") as err:  # not our stderr: runc waits until every holder of the hook's pipes closes them
        proc = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520", f"--ready-fd={ready_w}", str(pid),
                                 "tap0"], pass_fds=(ready_w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
    os.close(ready_w)
    ready, _, _ = select.select([ready_r], [], [], 20)
    if not ready or os.read(ready_r, 1) != b"1":
        proc.kill()
        with open(log, errors="replace") as f:
            detail = " ".join(f.read().split())[-300:]
        print(f"slirp4netns did not start for pid {pid}: {detail or 'no output'}", file=sys.stderr)
        return 1
    with open(pidfile, "w") as f:
        f.write(str(proc.pid))
    return 0


def stop(pidfile: str) -> int:
    try:
        with open(pidfile) as f:
            os.kill(int(f.read()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(start(sys.argv[2]) if sys.argv[1] == "start" else stop(sys.argv[2]))
