#!/bin/sh
# Write a minimal rootfs tar made from Debian's busybox-static (/bin/busybox): usage busybox-rootfs.sh OUT.tar
# setup.sh imports it into the local image store (`workbench image import`) as the example's base image.
set -e
out=$1
[ -n "$out" ] || { echo "usage: $0 OUT.tar" >&2; exit 2; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/bin" "$d/etc" "$d/root" "$d/proc" "$d/sys" "$d/dev" "$d/usr/bin" "$d/var" "$d/tmp"
chmod 1777 "$d/tmp"
cp /bin/busybox "$d/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$d/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$d/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$d/etc/group"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$d" -cf "$out" .
