"""CDI devices rootless: a node the user may open is bind-mounted from its host path (no node can be created in
a user namespace); one the user may not open fails with one line saying so."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.rootless.conftest import RootlessUser

SPEC = """cdiVersion: "0.6.0"
kind: example.com/fake
annotations:
  org.mobyproject.buildkit.device.autoallow: true
devices:
  - name: zero
    containerEdits:
      deviceNodes:
        - path: /dev/fake0
          hostPath: /dev/zero
  - name: private
    containerEdits:
      deviceNodes:
        - path: /dev/fake1
          hostPath: {private}
"""


def _setup(user: RootlessUser, name: str, run: str) -> tuple[list[str], str]:
    cdi = user.mkdir(name + "-cdi")
    private = cdi / "private0"  # a null device only root may open
    os.mknod(private, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    user.write(cdi / "fake.yaml", SPEC.format(private=private))
    ctx = user.mkdir(name)
    user.write(ctx / "Dockerfile", f"# syntax=docker/dockerfile:1.14-labs\nFROM localhost:5055/busybox\n{run}\n")
    out = user.mkdir(name + "-out")
    return ["build", "--progress", "plain", "--no-cache", "--cdi-spec-dir", str(cdi),
            "-o", f"type=local,dest={out}", str(ctx)], str(private)


def test_a_device_the_user_may_open(rootless_user: RootlessUser, registry: str) -> None:
    args, _ = _setup(rootless_user, "cdi-zero", "RUN --device=example.com/fake=zero sh -c "
                     "'test -c /dev/fake0 && head -c 3 /dev/fake0 | od -An -tx1 > /z && echo x > /dev/fake0'")
    r = rootless_user.run(args)
    assert r.returncode == 0, r.stderr
    assert "device example.com/fake=zero granted: auto-allow (annotation)" in r.stderr
    out = args[-2].split("dest=")[1]
    with open(os.path.join(out, "z")) as f:
        assert f.read() == " 00 00 00\n"  # /dev/zero's bytes, read through /dev/fake0


def test_a_device_the_user_may_not_open_is_one_line(rootless_user: RootlessUser, registry: str) -> None:
    args, private = _setup(rootless_user, "cdi-private", "RUN --device=example.com/fake=private true")
    r = rootless_user.run(args)
    assert r.returncode == 1
    line = (f'CDI device injection failed: rootless: CDI device node "{private}" (as /dev/fake1) cannot be opened '
            f"for read+write by uid {rootless_user.uid} (mode crw-------)")
    assert line in r.stderr, r.stderr


def test_a_missing_host_node_is_one_line(rootless_user: RootlessUser, registry: str) -> None:
    """A node whose type and numbers the spec gives is not looked at before the bind: gone from the host, it is
    one line, not a traceback."""
    args, private = _setup(rootless_user, "cdi-missing", "RUN --device=example.com/fake=gone true")
    spec = Path(args[args.index("--cdi-spec-dir") + 1]) / "fake.yaml"
    gone = f"{private}-gone"
    rootless_user.write(spec, spec.read_text() + f"""  - name: gone
    containerEdits:
      deviceNodes:
        - path: /dev/fake2
          hostPath: {gone}
          type: c
          major: 1
          minor: 3
""")
    r = rootless_user.run(args, env={"WORKBENCH_SERVER": "0"})
    assert r.returncode == 1
    assert (f'CDI device injection failed: rootless: failed to stat CDI host device "{gone}" (as /dev/fake2): '
            "No such file or directory") in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
