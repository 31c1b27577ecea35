#!/usr/bin/env bash
# Sets up .venv and runs the demo (theory vs simulation on MNIST 0/1). Extra arguments go to `finwidth demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" "plot"
cd "$root"
exec "${FINWIDTH_VENV:-$root/.venv}/bin/finwidth" demo "$@"
