#!/usr/bin/env bash
# Set everything up on a fresh Debian 12 machine (as root) and build the bundled example twice:
# the second build comes entirely from the cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/scripts/install.sh"
bash "$here/scripts/registry.sh" >/dev/null
out=$(mktemp -d)
"$here/.venv/bin/workbench" build "$here/examples/hello" --progress plain --output "type=oci,dest=$out/hello.tar"
"$here/.venv/bin/workbench" build "$here/examples/hello" --progress plain --output "type=local,dest=$out/rootfs"
echo
echo "OCI image: $out/hello.tar"
echo "files:     $out/rootfs (greeting: $(cat "$out/rootfs/srv/greeting"))"
