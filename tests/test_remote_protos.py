"""workbench/remote/proto: the committed protoc output is what scripts/gen-protos.sh makes of the .proto files,
and the numbers that matter on the wire are BuildKit's (v0.8 in Docker 20.10 and v0.20 alike)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROTO = REPO / "workbench" / "remote" / "proto"


def generated(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))}


def test_the_committed_modules_are_what_gen_protos_makes(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gen-protos.sh"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    fresh = generated(tmp_path / "workbench" / "remote" / "proto")
    committed = generated(PROTO)
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    assert sorted(fresh) == sorted(committed) == sorted(
        f"{name}{suffix}" for name in ("control", "gateway", "ops", "worker") for suffix in suffixes)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], "run scripts/gen-protos.sh and commit the result"


def numbers(message: type) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_wire_numbers_are_buildkits() -> None:
    from workbench.remote.proto import control_pb2 as c
    from workbench.remote.proto import ops_pb2 as ops
    from workbench.remote.proto import worker_pb2 as w

    # v0.8 reads the exporter from 3/4 only; v0.20 takes 13 first
    assert numbers(c.SolveRequest) == {
        "Ref": 1, "Definition": 2, "ExporterDeprecated": 3, "ExporterAttrsDeprecated": 4, "Session": 5,
        "Frontend": 6, "FrontendAttrs": 7, "Cache": 8, "Entitlements": 9, "FrontendInputs": 10, "Internal": 11,
        "Exporters": 13}
    assert numbers(c.PruneRequest) == {"filter": 1, "all": 2, "keepDuration": 3, "reservedSpace": 4,
                                       "maxUsedSpace": 5, "minFreeSpace": 6}
    assert numbers(w.WorkerRecord) == {"ID": 1, "Labels": 2, "platforms": 3, "GCPolicy": 4, "BuildkitVersion": 5,
                                       "CDIDevices": 6}
    assert numbers(w.GCPolicy) == {"all": 1, "keepDuration": 2, "reservedSpace": 3, "filters": 4,
                                   "maxUsedSpace": 5, "minFreeSpace": 6}
    assert numbers(c.StatusResponse) == {"vertexes": 1, "statuses": 2, "logs": 3, "warnings": 4}
    assert numbers(c.BytesMessage) == {"data": 1}
    assert numbers(ops.Op) == {"inputs": 1, "exec": 2, "source": 3, "file": 4, "build": 5, "merge": 6, "diff": 7,
                               "platform": 10, "constraints": 11}
    assert numbers(ops.Definition) == {"def": 1, "metadata": 2, "Source": 3}
    methods = {m.name: (m.client_streaming, m.server_streaming)
               for m in c.DESCRIPTOR.services_by_name["Control"].methods}
    assert methods == {"DiskUsage": (False, False), "Prune": (False, True), "Solve": (False, False),
                       "Status": (False, True), "Session": (True, True), "ListWorkers": (False, False),
                       "Info": (False, False)}
    assert c.DESCRIPTOR.package == "moby.buildkit.v1" and w.DESCRIPTOR.package == "moby.buildkit.v1.types"
    assert ops.DESCRIPTOR.package == "pb"


def test_a_worker_record_as_docker_20_10_sends_it_decodes() -> None:
    from workbench.remote.proto import control_pb2 as c

    # ListWorkersResponse{record: [{ID: "moby", platforms: [{Architecture: "amd64", OS: "linux"}]}]}, by hand
    platform = b"\x0a\x05amd64\x12\x05linux"
    record = b"\x0a\x04moby" + b"\x1a" + bytes([len(platform)]) + platform
    answer = c.ListWorkersResponse.FromString(b"\x0a" + bytes([len(record)]) + record)
    assert [(r.ID, [(p.OS, p.Architecture) for p in r.platforms]) for r in answer.record] == [
        ("moby", [("linux", "amd64")])]


def test_gateway_wire_numbers_are_buildkits() -> None:
    from workbench.remote.proto import gateway_pb2 as gw

    assert numbers(gw.SolveRequest) == {"Definition": 1, "Frontend": 2, "FrontendOpt": 3, "allowResultReturn": 5,
                                        "allowResultArrayRef": 6, "Final": 10, "ExporterAttr": 11, "Evaluate": 14}
    assert numbers(gw.Result) == {"refDeprecated": 1, "refsDeprecated": 2, "ref": 3, "refs": 4, "metadata": 10}
    assert numbers(gw.NewContainerRequest) == {"ContainerID": 1, "Mounts": 2, "Network": 3, "platform": 4,
                                               "constraints": 5, "extraHosts": 6, "hostname": 7}
    assert numbers(gw.ExecMessage) == {"ProcessID": 1, "Init": 2, "File": 3, "Resize": 4, "Started": 5, "Exit": 6,
                                       "Done": 7, "Signal": 8}
    assert numbers(gw.InitMessage) == {"ContainerID": 1, "Meta": 2, "Fds": 3, "Tty": 4, "Security": 5,
                                       "secretenv": 6}
    assert numbers(gw.ExitMessage) == {"Code": 1, "Error": 2}
    assert numbers(gw.FdMessage) == {"Fd": 1, "EOF": 2, "Data": 3}
    assert numbers(gw.ReturnRequest) == {"result": 1, "error": 2}
    assert numbers(gw.RPCStatus) == {"code": 1, "message": 2, "details": 3}  # google.rpc.Status
    assert numbers(gw.PongResponse) == {"FrontendAPICaps": 1, "LLBCaps": 2, "Workers": 3}
