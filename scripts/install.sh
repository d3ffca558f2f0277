#!/usr/bin/env bash
# Install what workbench needs on Debian 12 (as root): Debian packages and a venv with the project.
# Idempotent: quick when everything is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pkgs=(runc busybox-static docker-registry skopeo curl zstd)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$here/.venv/bin/workbench" ] || [ "$here/pyproject.toml" -nt "$here/.venv/.installed" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  # compat editable mode: a plain .pth path entry, cheaper at start-up than the import-hook finder
  "$here/.venv/bin/pip" install -q -e "$here[dev]" --config-settings editable_mode=compat
  touch "$here/.venv/.installed"
fi
