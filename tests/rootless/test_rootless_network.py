"""RUN's networks rootless: the default (the host's network, shared through our user namespace), `--network=host`
with `--allow network.host`, `--network=none`, and `WORKBENCH_ROOTLESS_NET=slirp4netns` (each RUN a network
namespace of its own, outbound through slirp4netns, as rootlesskit's `--net=slirp4netns`)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.rootless.conftest import RootlessUser

BASE = "FROM localhost:5055/busybox\n"
IFACES = "sed 1,2d /proc/net/dev | cut -d: -f1 | xargs -n1 | sort > /ifaces"  # not /sys: rootless binds the host's


def _build(user: RootlessUser, name: str, dockerfile: str, *args: str,
           env: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    ctx = user.mkdir(name)
    user.write(ctx / "Dockerfile", dockerfile)
    out = user.mkdir(name + "-out")
    r = user.run(["build", "--progress", "plain", "--no-cache", "-o", f"type=local,dest={out}", *args, str(ctx)],
                 env=env)
    files = {p.name: p.read_text() for p in out.iterdir() if p.is_file()} if r.returncode == 0 else {}
    return r.returncode, r.stderr, files


def test_the_default_network_is_the_hosts(rootless_user: RootlessUser, registry: str) -> None:
    code, err, files = _build(rootless_user, "net-default",
                              BASE + "RUN wget -q -O /v2 http://localhost:5055/v2/\n")
    assert code == 0, err
    assert files["v2"] == "{}"  # the registry on the host's loopback answered


def test_host_network_needs_the_entitlement(rootless_user: RootlessUser, registry: str) -> None:
    dockerfile = BASE + "RUN --network=host wget -q -O /v2 http://localhost:5055/v2/\n"
    code, err, _ = _build(rootless_user, "net-host-denied", dockerfile)
    assert code == 1 and "network.host is not allowed" in err
    code, err, files = _build(rootless_user, "net-host", dockerfile, "--allow", "network.host")
    assert code == 0, err
    assert files["v2"] == "{}"


def test_network_none_has_only_loopback(rootless_user: RootlessUser, registry: str) -> None:
    code, err, files = _build(rootless_user, "net-none", BASE +
                              f"RUN --network=none sh -c '{IFACES}; "
                              "wget -q -T 2 http://localhost:5055/v2/ || echo unreachable > /none'\n")
    assert code == 0, err
    assert files["ifaces"] == "lo\n" and files["none"] == "unreachable\n"


@pytest.mark.skipif(shutil.which("slirp4netns") is None, reason="needs slirp4netns (apt-get install slirp4netns)")
@pytest.mark.skipif(os.stat("/dev/net/tun").st_mode & 0o006 != 0o006 if os.path.exists("/dev/net/tun") else True,
                    reason="/dev/net/tun is not open to other users here (udev makes it 0666): chmod 0666 it")
def test_slirp4netns_gives_each_run_a_network_of_its_own(rootless_user: RootlessUser, registry: str) -> None:
    code, err, files = _build(rootless_user, "net-slirp", BASE +
                              f"RUN {IFACES} && wget -q -O /v2 http://10.0.2.2:5055/v2/ && "
                              "(wget -q -T 2 -O- http://localhost:5055/v2/ || echo own-loopback > /lo)\n"
                              "RUN --network=host wget -q -O /v2h http://localhost:5055/v2/\n",
                              "--allow", "network.host", env={"WORKBENCH_ROOTLESS_NET": "slirp4netns",
                                                              "WORKBENCH_ROOTLESS_DISABLE_HOST_LOOPBACK": "false"})
    assert code == 0, err
    assert files["ifaces"] == "lo\ntap0\n"  # a namespace of its own with slirp4netns's tap device
    assert files["v2"] == "{}"  # outbound through slirp4netns (10.0.2.2 is the host's loopback)
    assert files["lo"] == "own-loopback\n"
    assert files["v2h"] == "{}"  # --network=host still shares the host's network


@pytest.mark.skipif(shutil.which("slirp4netns") is None, reason="needs slirp4netns (apt-get install slirp4netns)")
@pytest.mark.skipif(os.stat("/dev/net/tun").st_mode & 0o006 != 0o006 if os.path.exists("/dev/net/tun") else True,
                    reason="/dev/net/tun is not open to other users here (udev makes it 0666): chmod 0666 it")
def test_slirp4netns_keeps_the_hosts_loopback_out_of_reach(rootless_user: RootlessUser, registry: str) -> None:
    """As rootlesskit's --disable-host-loopback (BuildKit's and Docker's rootless defaults): a step in a network of
    its own cannot reach the host's 127.0.0.1 services through 10.0.2.2 unless the user allows it."""
    code, err, files = _build(rootless_user, "net-slirp-lo", BASE +
                              "RUN wget -q -T 3 -O /v2 http://10.0.2.2:5055/v2/ || echo refused > /v2\n",
                              env={"WORKBENCH_ROOTLESS_NET": "slirp4netns"})
    assert code == 0, err
    assert files["v2"] == "refused\n"
    code, err, _ = _build(rootless_user, "net-slirp-lo-bad", BASE + "RUN true\n",
                          env={"WORKBENCH_ROOTLESS_NET": "slirp4netns",
                               "WORKBENCH_ROOTLESS_DISABLE_HOST_LOOPBACK": "no"})
    assert code == 1 and "WORKBENCH_ROOTLESS_DISABLE_HOST_LOOPBACK=no: expected true or false" in err, err


def test_slirp4netns_without_tun_access_is_one_line(rootless_user: RootlessUser, registry: str) -> None:
    if os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        pytest.skip("/dev/net/tun is open to every user here")
    code, err, _ = _build(rootless_user, "net-notun", BASE + "RUN true\n",
                          env={"WORKBENCH_ROOTLESS_NET": "slirp4netns"})
    assert code == 1
    assert ("ERROR: WORKBENCH_ROOTLESS_NET=slirp4netns: /dev/net/tun cannot be opened by your user (mode "
            "crw-------); an admin fixes it with: chmod 0666 /dev/net/tun") in err, err


def test_an_unknown_rootless_network_is_one_line(rootless_user: RootlessUser, registry: str) -> None:
    code, err, _ = _build(rootless_user, "net-bad", BASE + "RUN true\n", env={"WORKBENCH_ROOTLESS_NET": "vpnkit"})
    assert code == 1
    assert ("WORKBENCH_ROOTLESS_NET=vpnkit: unknown rootless network (host, slirp4netns or pasta)" in err), err
