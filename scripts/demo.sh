#!/usr/bin/env bash
# Sets up .venv and runs the demo (theory vs simulation on MNIST 0/1). Extra arguments go to `finwidth demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" "sampling,plot"
cd "$root"
# The project's checkout keeps the data sets in ../shared/data; elsewhere FINWIDTH_DATA or the caches apply.
if [ -z "${FINWIDTH_DATA:-}" ] && [ -d "$root/../shared/data" ]; then
  export FINWIDTH_DATA="$(cd "$root/../shared/data" && pwd)"
fi
exec "${FINWIDTH_VENV:-$root/.venv}/bin/finwidth" demo "$@"
