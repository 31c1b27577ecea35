#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" "test,plot,sampling"
cd "$root"
# one BLAS thread per process: the tests are many small factorisations (see tests/conftest.py)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
exec "${FINWIDTH_VENV:-$root/.venv}/bin/python" -m pytest "$@"
