#!/usr/bin/env bash
# Regenerate workbench/remote/proto/*_pb2.py, *_pb2_grpc.py and *.pyi from the .proto files beside them.
# Run from anywhere; writes under the repo root, or under $1 when given (tests/test_remote_protos.py compares).
# `-I .` from the repo root makes the generated imports `from workbench.remote.proto import x_pb2`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here}
python=${PYTHON:-$here/.venv/bin/python}
cd "$here"
mkdir -p "$out"
# grpc_tools.protoc adds its bundled well-known types (google/protobuf/timestamp.proto) to the include path
"$python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  workbench/remote/proto/*.proto
