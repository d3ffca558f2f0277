"""BuildKit's solve errors back to Dockerfile lines, shown as our own build errors show them.

A failed Solve's gRPC status carries `google.rpc.Status.details` whose `Any.value` is JSON (util/grpcerrors):
`…/errdefs.Source+json` gives the source file and line ranges, `…/errdefs.Vertex+json` the failed op's digest
(which our Definition maps to a step and its lines).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from workbench.errors import format_failure
from workbench.progress.events import SourceLocation

if TYPE_CHECKING:
    from workbench.remote.marshal import Marshalled

SOURCE = "errdefs.Source+json"
VERTEX = "errdefs.Vertex+json"
Detail = tuple[str, bytes]  # (type_url, value)


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The top-level fields of a protobuf message: (number, varint or bytes); fixed-width ones skipped."""
    out: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 2:
            n = varint()
            out.append((number, data[i:i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def status_details(data: bytes) -> tuple[str, list[Detail]]:
    """A `grpc-status-details-bin` value (google.rpc.Status): its message and its details."""
    message, details = "", []
    for number, value in _fields(data):
        if number == 2 and isinstance(value, bytes):
            message = value.decode(errors="replace")
        elif number == 3 and isinstance(value, bytes):
            parts = dict(_fields(value))
            url, raw = parts.get(1, b""), parts.get(2, b"")
            if isinstance(url, bytes) and isinstance(raw, bytes):
                details.append((url.decode(errors="replace"), raw))
    return message, details


def rpc_error_details(err: Any) -> tuple[str, list[Detail]]:
    """A grpc.RpcError's message and details (from its trailing metadata)."""
    message = err.details() if hasattr(err, "details") else str(err)
    for key, value in (err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            _, details = status_details(value)
            return message or "", details
    return message or "", []


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def solve_error_location(details: list[Detail], dockerfile: str = "", marshalled: Marshalled | None = None
                         ) -> tuple[SourceLocation | None, str, str]:
    """(where, step name, the Dockerfile text to show) that the details point at."""
    location, step, text = None, "", dockerfile
    for url, raw in details:
        body = _json(raw)
        if url.endswith(SOURCE) and location is None:
            info = body.get("info") or {}
            ranges = body.get("ranges") or []
            if not ranges:
                continue
            start = int((ranges[0].get("start") or {}).get("line") or 0)
            end = int((ranges[-1].get("end") or {}).get("line") or start)
            if start <= 0:
                continue
            location = SourceLocation(info.get("filename") or "Dockerfile", start, max(start, end))
            if info.get("data"):
                text = base64.b64decode(info["data"]).decode(errors="replace")
        elif url.endswith(VERTEX) and marshalled is not None:
            dgst = body.get("digest") or ""
            step = step or marshalled.names.get(dgst, "")
            if location is None:
                location = marshalled.locations.get(dgst)
    return location, step, text


def format_solve_error(message: str, details: list[Detail], *, dockerfile: str = "",
                       marshalled: Marshalled | None = None, step: str = "") -> str:
    """The closing error of a remote build: the step, `Dockerfile:LINE` with the lines, and the message."""
    location, found_step, text = solve_error_location(details, dockerfile, marshalled)
    return format_failure(message, location, step or found_step, text)
