#!/usr/bin/env bash
# Run the test suite (installs what it needs first; the tests start their own registry).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/scripts/install.sh"
cd "$here"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
