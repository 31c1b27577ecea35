#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" "test,plot"
cd "$root"
exec "${FINWIDTH_VENV:-$root/.venv}/bin/python" -m pytest "$@"
