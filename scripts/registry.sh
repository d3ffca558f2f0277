#!/usr/bin/env bash
# Start Debian's docker-registry on 127.0.0.1:5055 (if not up) holding localhost:5055/busybox:latest,
# a busybox image made from the host's busybox-static binary. Used by the example and the tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exec sh "$here/tests/conformance/registry.sh"
