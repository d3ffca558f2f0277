"""The emulator in front of azurite: signed URLs (Azure SAS) that point at a real Azure blob emulator.

azurite's account is the well-known development account (`devstoreaccount1` and its published key); the
emulator signs a service SAS per blob (version 2020-12-06 string-to-sign) and creates its container with an
account SAS at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

DEV_ACCOUNT = "devstoreaccount1"
# azurite's published development key (blob/utils/constants.js EMULATOR_ACCOUNT_KEY_STR), not a secret
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SAS_VERSION = "2020-12-06"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _sign(key: str, text: str) -> str:
    return base64.b64encode(hmac.new(base64.b64decode(key), text.encode(), hashlib.sha256).digest()).decode()


class Azurite:
    """Where blobs go: `endpoint` is azurite's blob service, e.g. http://127.0.0.1:10000."""

    def __init__(self, endpoint: str, container: str, account: str = DEV_ACCOUNT, key: str = DEV_KEY) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.container, self.account, self.key = container, account, key

    def blob_url(self, blob: str, perms: str, ttl: float) -> str:
        """A service SAS URL for one blob (`perms`: r, cw, ...)."""
        expiry = _iso(time.time() + ttl)
        canonical = f"/blob/{self.account}/{self.container}/{blob}"
        fields = [perms, "", expiry, canonical, "", "", "", SAS_VERSION, "b", "", "", "", "", "", "", ""]
        query = {"sv": SAS_VERSION, "se": expiry, "sr": "b", "sp": perms, "sig": _sign(self.key, "\n".join(fields))}
        return f"{self.endpoint}/{self.account}/{self.container}/{blob}?{urllib.parse.urlencode(query)}"

    def account_query(self, ttl: float = 600) -> str:
        """An account SAS (blob service, all resource types) for set-up calls such as creating the container."""
        expiry = _iso(time.time() + ttl)
        fields = [self.account, "rwdlac", "b", "sco", "", expiry, "", "", SAS_VERSION, "", ""]
        query = {"sv": SAS_VERSION, "ss": "b", "srt": "sco", "sp": "rwdlac", "se": expiry,
                 "sig": _sign(self.key, "\n".join(fields))}
        return urllib.parse.urlencode(query)

    def container_url(self) -> str:
        return f"{self.endpoint}/{self.account}/{self.container}?restype=container&{self.account_query()}"
