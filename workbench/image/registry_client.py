"""Requests to one repository of an OCI distribution (v2) registry: URLs, the shared HTTP client, errors.

Requests go through `workbench.http` (urllib3, imported on first use, so importing this module stays cheap);
the auth challenges are answered by `registry_auth.RegistryAuth`, its auth hook.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from workbench.http.client import HttpClient, Response, shared_client
from workbench.http.errors import HttpError
from workbench.image.reference import Reference
from workbench.image.registry_auth import RegistryAuth
from workbench.image.registry_config import LOCAL_HOSTS, PARALLEL_PULLS, TIMEOUT, uses_http, verifies_tls
from workbench.image.registry_errors import RegistryError, failure, reason

Progress = Callable[[str, int, int], None]  # (blob digest, bytes so far, total) while a blob moves

def _http(verify: bool) -> HttpClient:
    """The HTTP client all registry requests share (one with certificate checks, one without)."""
    # no proxy for loopback, whatever the environment says; the environment's proxies otherwise
    return shared_client(timeout=TIMEOUT, direct=LOCAL_HOSTS, verify=verify, user_agent="workbench/0.1",
                         maxsize=2 * PARALLEL_PULLS)


class RegistryClient:
    """Talks to one repository of one registry; keeps the Authorization it earned (in its auth hook)."""

    def __init__(self, ref: Reference, push: bool = False, extra_pull: tuple[str, ...] = ()) -> None:
        self.ref = ref
        scheme = "http" if uses_http(ref.registry) else "https"
        self.origin = f"{scheme}://{ref.registry}"
        self.base = f"{self.origin}/v2/{ref.repository}"
        self.push = push
        self.http = _http(verifies_tls(ref.registry))
        self.auth = RegistryAuth(ref, self.http, push, extra_pull)

    @property
    def authorization(self) -> str | None:
        """The Authorization header earned so far (None before the first challenge)."""
        return self.auth.authorization

    def fail(self, what: str, why: str) -> RegistryError:
        """The RegistryError for `what` (e.g. "pulling manifest") on this client's reference."""
        return failure(self.ref, what, why)

    def open(self, path: str, what: str, accept: str = "*/*") -> Response:
        """GET base+path, answering one auth challenge; RegistryError on any failure."""
        return self.request("GET", path, what, headers={"Accept": accept})

    def url(self, location: str) -> str:
        """An absolute URL for a path under the repository ("/blobs/..."), or a Location header's value."""
        if location.startswith(("http://", "https://")):
            return location
        if location.startswith("/v2/"):
            return self.origin + location
        return self.base + location

    def request(self, method: str, path: str, what: str, data: Any = None,
                headers: dict[str, str] | None = None, not_found_ok: bool = False) -> Response:
        """`method` base+path (or an absolute URL / Location), answering one auth challenge.

        `data` (bytes, or a file object with Content-Length in `headers`) cannot be sent twice: requests with a
        streamed body are made after an earlier request earned the Authorization. RegistryError on failures;
        with `not_found_ok` a 404 returns its response.
        """
        try:
            return self.http.request(method, self.url(path), headers=headers, body=data, auth=self.auth,
                                     ok=(404,) if not_found_ok else ())
        except HttpError as e:
            if e.status:
                raise self._http_error(e.status, e.reason, e.body, what, e.challenged) from None
            raise RegistryError(
                f"cannot reach registry {self.ref.registry} for {self.ref}: {reason(e)}") from None

    def _http_error(self, code: int, status_text: str, body: bytes, what: str, authed: bool) -> RegistryError:
        detail = ""
        try:
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{x.get('message') or x.get('code')} ({x.get('code')})" for x in errors)
        except (ValueError, AttributeError):
            pass
        why = f"{code} {status_text}" + (f": {detail}" if detail else "")
        return self.fail(what, why + self.auth.refusal(code, authed))


def pull_client(ref: Reference) -> RegistryClient:
    """A client for reading `ref`'s repository (pull scope); reuse it for every request of one operation."""
    return RegistryClient(ref)


def push_client(ref: Reference, mount_from: tuple[str, ...] = ()) -> RegistryClient:
    """A client for pushing to `ref`'s repository; `mount_from` names repositories of the same registry whose
    blobs may be mounted (they go into the token scope). Reuse one client for a whole push."""
    return RegistryClient(ref, push=True, extra_pull=mount_from)
