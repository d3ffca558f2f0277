"""Where a BuildKit daemon listens: `--addr` / `BUILDKIT_HOST` and the `--tls*` flags, checked up front.

    unix:///run/buildkit/buildkitd.sock    a buildkitd socket
    tcp://host:1234                        plain, or TLS with --tlscacert [--tlscert --tlskey] [--tlsservername]
    docker://[/var/run/docker.sock]        the BuildKit inside a Docker daemon (POST /grpc, upgraded to h2c)

Every error names the flag (or variable) the value came from and says what would be accepted.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DOCKER_SOCKET = "/var/run/docker.sock"
ADDRESS_FORMS = "unix:///PATH, tcp://HOST:PORT or docker://[/PATH/docker.sock]"


class AddressError(ValueError):
    """A `--addr` / `BUILDKIT_HOST` / `--tls*` value that cannot be used; the message names it."""


@dataclass(frozen=True)
class TLSFiles:
    """The PEM contents given by `--tlscacert` / `--tlscert` / `--tlskey`, and `--tlsservername`."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class Address:
    scheme: Literal["unix", "tcp", "docker"]
    text: str  # as written, for messages
    path: str = ""  # the socket (unix, docker)
    host: str = ""
    port: int = 0
    tls: TLSFiles | None = None
    source: str = "--addr"  # the flag or variable it came from

    def __str__(self) -> str:
        return self.text


def add_address_arguments(parser: argparse.ArgumentParser) -> None:
    """`--addr` and the TLS flags, named as buildctl names them."""
    parser.add_argument("--addr", metavar="ADDR",
                        help=f"the BuildKit daemon: {ADDRESS_FORMS} (default: $BUILDKIT_HOST)")
    parser.add_argument("--tlscacert", metavar="FILE", help="CA certificate (PEM) to verify a tcp:// daemon by")
    parser.add_argument("--tlscert", metavar="FILE", help="client certificate (PEM) for a tcp:// daemon")
    parser.add_argument("--tlskey", metavar="FILE", help="client key (PEM) for a tcp:// daemon")
    parser.add_argument("--tlsservername", metavar="NAME",
                        help="the server name to verify the daemon's certificate against")


def address_from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Address | None:
    """The address of `--addr`, else of `BUILDKIT_HOST`; None when neither is set (the local engine)."""
    tls = {k: getattr(args, k, None) for k in ("tlscacert", "tlscert", "tlskey", "tlsservername")}
    text, source = getattr(args, "addr", None), "--addr"
    if not text and env.get("BUILDKIT_HOST"):
        text, source = env["BUILDKIT_HOST"], "BUILDKIT_HOST"
    if not text:
        given = [f"--{k}" for k, v in tls.items() if v]
        if given:
            raise AddressError(f"{given[0]} needs a tcp:// daemon: pass --addr tcp://HOST:PORT (or set BUILDKIT_HOST)")
        return None
    return parse_address(text, source=source, **tls)


def parse_address(text: str, *, source: str = "--addr", tlscacert: str | None = None, tlscert: str | None = None,
                  tlskey: str | None = None, tlsservername: str | None = None) -> Address:
    scheme, sep, rest = text.partition("://")
    what = f"{source} {text!r}"
    if not sep or scheme not in ("unix", "tcp", "docker"):
        raise AddressError(f"{what}: not an address; use {ADDRESS_FORMS}")
    tls_flags = {"--tlscacert": tlscacert, "--tlscert": tlscert, "--tlskey": tlskey, "--tlsservername": tlsservername}
    if scheme != "tcp":
        for flag, value in tls_flags.items():
            if value:
                raise AddressError(f"{flag} only applies to a tcp:// daemon, not {what}")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise AddressError(f"{what}: a unix socket needs an absolute path, as unix:///run/buildkit/buildkitd.sock")
        return Address("unix", text, path=rest, source=source)
    if scheme == "docker":
        path = rest or DOCKER_SOCKET
        if not path.startswith("/"):
            raise AddressError(f"{what}: docker:// takes nothing or an absolute socket path, as docker://{DOCKER_SOCKET}")
        return Address("docker", text, path=path, source=source)
    host, port = _host_port(rest, what)
    tls = _tls_files(tlscacert, tlscert, tlskey, tlsservername)
    return Address("tcp", text, host=host, port=port, tls=tls, source=source)


def plaintext_risk(address: Address) -> str | None:
    """What a tcp:// address without TLS exposes, for a warning line; None where nothing crosses a network.

    Refused it is not: buildctl and buildx take a plain `tcp://` silently, and the same `BUILDKIT_HOST` must
    work here as there (a daemon inside a private network or behind a tunnel is a common setup)."""
    if address.scheme != "tcp" or address.tls is not None or _loopback(address.host):
        return None
    return (f"{address.source} {address.text} has no TLS (--tlscacert): the build context, --secret values and "
            f"registry credentials cross the network unencrypted")


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(rest: str, what: str) -> tuple[str, int]:
    hostport = rest.rstrip("/")
    if hostport.startswith("["):  # [::1]:1234
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = hostport.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536 or "/" in host:
        raise AddressError(f"{what}: a tcp address needs a host and a port, as tcp://buildkitd:1234")
    return host, int(port_text)


def _tls_files(ca: str | None, cert: str | None, key: str | None, server_name: str | None) -> TLSFiles | None:
    if not (ca or cert or key or server_name):
        return None
    if bool(cert) != bool(key):
        missing = "--tlskey" if cert else "--tlscert"
        raise AddressError(f"{missing} is missing: a client certificate needs both --tlscert and --tlskey")
    files = TLSFiles(ca=_pem("--tlscacert", ca, "CERTIFICATE"), cert=_pem("--tlscert", cert, "CERTIFICATE"),
                     key=_pem("--tlskey", key, "PRIVATE KEY"), server_name=server_name or None)
    _check_loads(ca, cert, key)
    return files


def _check_loads(ca: str | None, cert: str | None, key: str | None) -> None:
    """Load the files as a TLS client would: grpc's own failure ("Failed to create security handshaker")
    names no file."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as e:
            raise AddressError(f"--tlscacert {ca}: not a usable CA certificate ({e.reason or e})") from None
    if cert and key:
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            raise AddressError(f"--tlscert {cert} / --tlskey {key}: not a matching certificate and key "
                               f"({e.reason or e})") from None


def _pem(flag: str, path: str | None, kind: str) -> bytes | None:
    """The file's bytes, once it is known to hold a PEM block of `kind` (grpc's own error would not name the flag)."""
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AddressError(f"{flag} {path}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data or kind.encode() not in data:
        raise AddressError(f"{flag} {path}: not a PEM {kind.lower()} (expected a '-----BEGIN ...{kind}-----' block)")
    return data
