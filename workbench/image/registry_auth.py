"""Registry authentication: the `workbench.http` auth hook that answers a 401 challenge.

On a challenge: a Bearer token from the realm (anonymous, or with basic credentials from docker's config.json
"auths"), or Basic with those credentials. The Authorization earned is kept for the repository's later
requests; it goes to the registry only: to a URL of the registry's origin (scheme, host and port, as docker and
containerd match it), not to an upload `Location` on another host nor on to a redirect target (blob storage
with signed URLs), and a challenge from another origin is not answered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping

from workbench.http.client import HttpClient, StaticAuth
from workbench.http.errors import HttpError
from workbench.image.reference import Reference
from workbench.image.registry_config import docker_credentials, uses_http
from workbench.image.registry_errors import RegistryError, failure, reason


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ..., 'scope': ...}) from a WWW-Authenticate header."""
    import re

    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v1 if v1 or not v2 else v2
              for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest)}
    return scheme.lower(), params


class RegistryAuth:
    """The auth hook for one repository of one registry (pull, or pull and push, scope)."""

    def __init__(self, ref: Reference, http: HttpClient, push: bool = False, extra_pull: tuple[str, ...] = ()
                 ) -> None:
        self.ref = ref
        self.http = http  # for the token endpoint
        self.push = push
        self.extra_pull = extra_pull  # other repositories blobs may be mounted from (token scopes)
        self.authorization: str | None = None
        self._lock = threading.Lock()
        self.origin = _origin(f"{'http' if uses_http(ref.registry) else 'https'}://{ref.registry}/")

    def authorize(self, url: str) -> dict[str, str]:
        if not self.authorization or _origin(url) != self.origin:
            return {}
        return {"Authorization": self.authorization}

    def challenge(self, error: HttpError, sent: Mapping[str, str]) -> bool:
        if _origin(error.url) != self.origin:
            return False  # another host (blob storage): our credentials are not for it
        with self._lock:
            if self.authorization == sent.get("Authorization"):  # else a thread renewed it
                self.authenticate(error.headers.get("www-authenticate", ""))
        return True

    def refusal(self, code: int, authed: bool) -> str:
        """What to add to a 401 / 403 answer's reason: whose credentials were refused, or what access was denied."""
        if code == 401 and authed and (self.authorization or "").startswith("Basic "):
            creds_ = docker_credentials(self.ref.registry)
            return (f" — the registry refused the credentials of user {creds_[0] if creds_ else ''!r} from "
                    "docker's config.json (wrong user name or password?)")
        if code in (401, 403):
            creds = "with the credentials from docker's config.json" if docker_credentials(self.ref.registry) \
                else "anonymously (no credentials for it in docker's config.json)"
            action = "push" if self.push else "pull"
            return f" — {action} access denied {creds}; the repository may not exist or may need authorization"
        return ""

    def authenticate(self, header: str) -> None:
        """Earn an Authorization header from a 401 challenge (Bearer token or Basic credentials)."""
        import base64
        import urllib.parse

        scheme, params = parse_challenge(header)
        creds = docker_credentials(self.ref.registry)
        basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
        if scheme == "basic":
            if basic is None:
                raise self._fail("the registry asks for a user name and password, and docker's config.json has "
                                 "none for it")
            if self.authorization == basic:
                user = creds[0] if creds else ""
                raise self._fail("the registry refused the user name and password from docker's config.json "
                                 f"(user {user!r}) — wrong credentials?")
            self.authorization = basic
            return
        if scheme != "bearer" or not params.get("realm"):
            raise self._fail(f"unsupported auth challenge {header!r}")
        realm = params["realm"]
        scopes = [f"repository:{self.ref.repository}:{'pull,push' if self.push else 'pull'}"]
        scopes += [f"repository:{repo}:pull" for repo in self.extra_pull if repo != self.ref.repository]
        query: list[tuple[str, str]] = [("scope", sc) for sc in scopes]
        if params.get("service"):
            query.append(("service", params["service"]))
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        try:
            with self.http.request("GET", url, auth=StaticAuth({"Authorization": basic} if basic else {})) as resp:
                doc = json.loads(resp.read())
        except HttpError as e:
            if not e.status:
                raise self._fail(f"cannot reach token endpoint {realm}: {reason(e)}") from None
            hint = " — wrong credentials in docker's config.json?" if e.status in (401, 403) and basic else ""
            raise self._fail(f"token endpoint {realm} answered {e.status} {e.reason}{hint}") from None
        except ValueError:
            raise self._fail(f"token endpoint {realm} did not answer JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not token:
            raise self._fail(f"token endpoint {realm} gave no token")
        self.authorization = f"Bearer {token}"

    def _fail(self, why: str) -> RegistryError:
        return failure(self.ref, "authenticating", why)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url`, the port filled in for http and https; ("", "", None) if it has none."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "", "", None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)
