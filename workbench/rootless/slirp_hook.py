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

# the host's loopback stays out of reach unless asked; a mount namespace of its own, caps dropped, and seccomp
# narrow what a compromised slirp4netns could do (rootlesskit's hardening)
HARDENING = ("--enable-sandbox", "--enable-seccomp")


def start(pidfile: str, host_loopback: bool = False) -> int:
    pid = json.load(sys.stdin)["pid"]
    ready_r, ready_w = os.pipe()
    log = pidfile + ".log"
    with open(log, "wb") as err:  # not our stderr: runc waits until every holder of the hook's pipes closes them
        flags = [*HARDENING, *([] if host_loopback else ["--disable-host-loopback"])]
        proc = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520", *flags, f"--ready-fd={ready_w}",
                                 str(pid), "tap0"], pass_fds=(ready_w,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
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
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            is_slirp = os.path.basename(f.read().split(b"\0")[0]) == b"slirp4netns"
        if is_slirp:  # the pid may have been reused since the step started: never signal another process
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "start":
        sys.exit(start(sys.argv[2], host_loopback="--host-loopback" in sys.argv[3:]))
    sys.exit(stop(sys.argv[2]))
