#!/usr/bin/env bash
# Creates .venv (if needed) and installs finwidth into it with the given extras.
# Usage: bash scripts/setup.sh [extras]     e.g. "test,plot"
# torch: installed first, pinned to a version known to work (FINWIDTH_TORCH, default 2.13.0).
# Set FINWIDTH_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu) to choose the wheel index,
# which avoids multi-GB CUDA builds on Linux machines without a GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-plot}"
venv="${FINWIDTH_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "finwidth setup: creating virtual environment $venv" >&2
  "$python" -m venv "$venv"
fi
vpy="$venv/bin/python"
pip_q=(-q --disable-pip-version-check)

if ! "$vpy" -c "import torch" >/dev/null 2>&1; then
  spec="torch==${FINWIDTH_TORCH:-2.13.0}"
  echo "finwidth setup: installing $spec" >&2
  if [ -n "${FINWIDTH_TORCH_INDEX:-}" ]; then
    "$vpy" -m pip install "${pip_q[@]}" "$spec" --index-url "$FINWIDTH_TORCH_INDEX" --extra-index-url https://pypi.org/simple
  else
    "$vpy" -m pip install "${pip_q[@]}" "$spec"
  fi
fi

# Reinstall only when the package metadata or the extras changed.
stamp="$venv/.finwidth-setup-stamp"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "finwidth setup: installing finwidth[$extras] (editable)" >&2
  "$vpy" -m pip install "${pip_q[@]}" -e ".[$extras]"
  echo "$want" > "$stamp"
fi
