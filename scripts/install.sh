#!/usr/bin/env bash
# Install what workbench needs on Debian 12 (as root): Debian packages and a venv with the project.
# Idempotent: quick when everything is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# golang-github-container-orchestrated-devices-container-device-interface-dev: the CDI project's schema and
# test spec files (data only), read by tests/test_cdi.py
# openssl: the token-auth registry test makes its signing certificate with it
# graphviz: `workbench inspect graph --format svg` runs its `dot`
# pigz: bench/images.py's physical reference for gzip throughput
# docker.io: Docker 20.10's dockerd (embedded BuildKit v0.8), the old-daemon engine that tests/docker_daemon.py
# starts for `workbench builders` and remote builds (tests/test_remote_*.py)
# openssh-client: the ssh-agent / ssh-add that tests/test_remote_sshforward.py forwards over the session
# uidmap: newuidmap / newgidmap (setuid), which map an ordinary user's /etc/subuid ranges for rootless builds
# slirp4netns: a rootless RUN step's own network with outbound access (WORKBENCH_ROOTLESS_NET=slirp4netns)
pkgs=(runc busybox-static docker-registry skopeo curl zstd pigz openssl tmux graphviz docker.io openssh-client uidmap slirp4netns
      golang-github-container-orchestrated-devices-container-device-interface-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# GitHub's cache client and Azure's blob emulator, to check `workbench gha-server` against (tests/node)
if command -v npm >/dev/null 2>&1 && { [ ! -d "$here/tests/node/node_modules/@actions/cache" ] \
    || [ "$here/tests/node/package-lock.json" -nt "$here/tests/node/node_modules/.package-lock.json" ]; }; then
  (cd "$here/tests/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# VS Code's DAP client library, to drive `workbench dap` with (tests/dap)
if command -v npm >/dev/null 2>&1 && { [ ! -d "$here/tests/dap/node_modules/@vscode/debugadapter-testsupport" ] \
    || [ "$here/tests/dap/package-lock.json" -nt "$here/tests/dap/node_modules/.package-lock.json" ]; }; then
  (cd "$here/tests/dap" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
if [ ! -x "$here/.venv/bin/workbench" ] || [ "$here/pyproject.toml" -nt "$here/.venv/.installed" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  # compat editable mode: a plain .pth path entry, cheaper at start-up than the import-hook finder
  "$here/.venv/bin/pip" install -q -e "$here[dev]" --config-settings editable_mode=compat
  touch "$here/.venv/.installed"
fi
