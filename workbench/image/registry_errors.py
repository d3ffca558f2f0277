"""The one error of registry pulls and pushes, and the words for what went wrong on the network."""

from __future__ import annotations

from workbench.http.errors import HttpError
from workbench.image.reference import Reference
from workbench.image.registry_config import TIMEOUT


class RegistryError(Exception):
    """A pull or push failed; the message names the registry or reference and what went wrong."""


def failure(ref: Reference, what: str, why: str) -> RegistryError:
    """"`what` for `ref` from registry R: `why`"."""
    return RegistryError(f"{what} for {ref} from registry {ref.registry}: {why}")


def reason(e: BaseException) -> str:
    """A short human reason for a network failure (an HttpError's cause)."""
    import socket
    import ssl

    if isinstance(e, HttpError):
        if e.cause is None:
            return e.reason
        e = e.cause
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return f"timed out after {TIMEOUT:g}s"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host name ({e.strerror})"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e}"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
