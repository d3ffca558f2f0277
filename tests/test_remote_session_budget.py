"""The session server's connection-wide bound on request bytes (red-team finding 5/10 follow-up): a daemon that
opens many streams, each sending most of a big message, must not make us hold streams x MAX_MESSAGE."""

from __future__ import annotations

import resource
import struct
from pathlib import Path

import h2.events
import h2.exceptions

from tests.test_remote_hardening import RawClient
from workbench.remote.session import h2server
from workbench.remote.session.h2server import H2GrpcServer, frame
from workbench.remote.session.health import SERVING
from workbench.remote.session.proto.fsutil_types_pb2 import Packet
from workbench.remote.session.services import SessionServices

MiB = 1 << 20
SESSION_BUDGET = getattr(h2server, "SESSION_BUDGET", 32 * MiB)  # (a default: the test also runs on older code)
GET_SECRET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
STREAMS = 20
PART = 8 * MiB  # sent of each message, which announces 15 MiB (under MAX_MESSAGE): 160 MiB offered in all


class Client(RawClient):
    """RawClient with request metadata, and the gRPC messages it received per stream."""

    def open(self, path: str, end: bool = False, metadata: tuple[tuple[str, str], ...] = ()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x"),
                                     ("content-type", "application/grpc"), *metadata], end_stream=end)
        self.flush()
        return sid

    def flush(self) -> None:
        timeout = self.sock.gettimeout()
        self.sock.settimeout(None)  # a full socket buffer waits: the server's reader never stops taking bytes
        super().flush()
        self.sock.settimeout(timeout)

    def pump(self, wait: float = 0.0) -> None:
        before = len(self.events)
        super().pump(wait)
        for e in self.events[before:]:
            if isinstance(e, h2.events.DataReceived) and e.flow_controlled_length:
                try:
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
        self.flush()

    def messages(self, sid: int) -> list[bytes]:
        data = b"".join(e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
        out = []
        while len(data) >= 5:
            _, n = struct.unpack_from(">BI", data)
            out.append(data[5:5 + n])
            data = data[5 + n:]
        return out

    def trailers(self, sid: int) -> dict[bytes, bytes]:
        return {bytes(k): bytes(v) for e in self.events
                if isinstance(e, h2.events.TrailersReceived | h2.events.ResponseReceived) and e.stream_id == sid
                for k, v in e.headers}

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) and e.stream_id == sid
                   for e in self.events)

    def wait_for(self, sid: int, done=None) -> None:
        for _ in range(200):
            if self.ended(sid) or (done is not None and done()):
                return
            self.pump(0.05)
        raise AssertionError(f"stream {sid} did not end")


def held(server: H2GrpcServer) -> int:
    """Request bytes the server's calls hold: partial messages and messages not yet taken by a handler."""
    total = 0
    for call in list(server.calls.values()):
        total += len(call._buffer)
        total += sum(len(item[0]) for item in list(call._inbox.queue) if item is not None)
    return total


def rss_mib() -> tuple[int, int]:
    """(peak RSS, current RSS) of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    status = Path("/proc/self/status").read_text()
    now = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) >> 10
    return peak, now


def flood(client: Client, sids: list[int]) -> tuple[int, int]:
    """Sends PART bytes of a 15 MiB message on each stream, round robin, as the windows allow; returns (bytes sent,
    the most the server held at any moment seen)."""
    zeros = b"\0" * (64 * 1024)
    sent = dict.fromkeys(sids, 0)
    for sid in sids:
        client.conn.send_data(sid, struct.pack(">BI", 0, 15 * MiB))
    peak, idle = 0, 0
    while idle < 10:
        client.pump(0.05)
        progress = False
        for sid in sids:
            try:
                while sent[sid] < PART:
                    window = min(client.conn.local_flow_control_window(sid), client.conn.max_outbound_frame_size,
                                 PART - sent[sid])
                    if window <= 0:
                        break
                    client.conn.send_data(sid, zeros[:window])
                    sent[sid] += window
                    progress = True
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                continue  # reset by the server
            client.flush()
            peak = max(peak, held(client.server))
        idle = 0 if progress else idle + 1
    return sum(sent.values()), peak


def diffcopy_one(client: Client, name: str) -> bytes:
    """A small FileSync DiffCopy of the context on the raw connection: the listing, then `name`'s data."""
    sid = client.open("/moby.filesync.v1.FileSync/DiffCopy", metadata=(("dir-name", "context"),))
    stats: list = []
    data: list[bytes] = []
    requested = False
    for _ in range(200):
        client.pump(0.05)
        packets = [Packet.FromString(m) for m in client.messages(sid)]
        if not requested and any(p.type == Packet.PACKET_STAT and not p.HasField("stat") for p in packets):
            stats = [p.stat for p in packets if p.type == Packet.PACKET_STAT and p.HasField("stat")]
            index = next(i for i, s in enumerate(stats) if s.path == name)
            client.conn.send_data(sid, frame(Packet(type=Packet.PACKET_REQ, ID=index).SerializeToString()))
            client.flush()
            requested = True
        data = [p.data for p in packets if p.type == Packet.PACKET_DATA]
        if requested and data and data[-1] == b"":
            client.conn.send_data(sid, frame(Packet(type=Packet.PACKET_FIN).SerializeToString()), end_stream=True)
            client.flush()
            client.wait_for(sid)
            assert client.trailers(sid).get(b"grpc-status") == b"0", client.trailers(sid)
            return b"".join(data)
    raise AssertionError(f"DiffCopy did not finish: {client.trailers(sid)}")


def test_many_streams_of_big_messages_stay_under_the_session_budget(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_bytes(b"hello\n")
    client = Client(SessionServices(dirs={"context": ctx}).handlers())
    try:
        before = rss_mib()
        sids = [client.open(GET_SECRET) for _ in range(STREAMS)]
        sent, peak = flood(client, sids)
        after = rss_mib()
        print(f"\nflood: {sent / MiB:.0f} MiB sent on {STREAMS} streams; server held at most {peak / MiB:.1f} MiB; "
              f"process RSS peak {before[0]} -> {after[0]} MiB, now {before[1]} -> {after[1]} MiB")
        assert sent > SESSION_BUDGET + 8 * MiB  # the peer did push past the budget
        assert peak <= SESSION_BUDGET + MiB
        refused = [sid for sid in sids if client.trailers(sid).get(b"grpc-status") == b"8"]
        assert refused
        assert b"budget" in client.trailers(refused[0]).get(b"grpc-message", b"")

        # the connection still serves ordinary calls: a health check and a small DiffCopy
        health = client.open("/grpc.health.v1.Health/Check")
        client.conn.send_data(health, frame(b""), end_stream=True)
        client.flush()
        client.wait_for(health)
        assert client.trailers(health).get(b"grpc-status") == b"0"
        assert client.messages(health) == [SERVING]
        assert diffcopy_one(client, "a.txt") == b"hello\n"
    finally:
        client.close()
