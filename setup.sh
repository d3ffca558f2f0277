#!/usr/bin/env bash
# Set everything up on a fresh Debian 12 machine (as root) and build the bundled example twice:
# the second build comes entirely from the cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/scripts/install.sh"
bash "$here/scripts/registry.sh" >/dev/null
out=$(mktemp -d)
# The example's base image: a rootfs made from Debian's busybox-static, imported into the local image store
# (`FROM busybox-static` finds it there, so the first build needs no registry).
sh "$here/scripts/busybox-rootfs.sh" "$out/busybox-rootfs.tar"
SOURCE_DATE_EPOCH=0 "$here/.venv/bin/workbench" image import "$out/busybox-rootfs.tar" busybox-static \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["sh"]'
"$here/.venv/bin/workbench" build "$here/examples/hello" --progress plain --output "type=oci,dest=$out/hello.tar"
"$here/.venv/bin/workbench" build "$here/examples/hello" --progress plain --output "type=local,dest=$out/rootfs"
echo
echo "OCI image: $out/hello.tar"
echo "files:     $out/rootfs (greeting: $(cat "$out/rootfs/srv/greeting"))"
