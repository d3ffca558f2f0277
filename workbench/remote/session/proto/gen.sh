#!/bin/sh
# Regenerates the session services' *_pb2.py / *_pb2.pyi from the .proto files beside this script.
# Run from anywhere; protoc runs from the repo root with `-I .` so imports are package paths.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
py=${PYTHON:-"$root/.venv/bin/python"}
cd "$root"
"$py" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. workbench/remote/session/proto/*.proto
