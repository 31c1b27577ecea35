#!/usr/bin/env bash
# Creates .venv (if needed) and installs finwidth into it, editable, with the given extras.
# Usage: bash scripts/setup.sh [extras]     e.g. "sampling,plot" (the default) or "test,plot,sampling"
# Every package comes from the index that pip is configured with (pip.conf, PIP_INDEX_URL, ...).
# torch (extras sampling and all): installed first, pinned to a version known to work (FINWIDTH_TORCH,
# default 2.13.0). FINWIDTH_TORCH_INDEX=URL adds one more wheel index for it, e.g. PyTorch's CPU-only
# index (the URL is on PyTorch's installation page): its "+cpu" wheel of the pinned version then wins
# over the multi-GB CUDA build on a machine without a GPU (docs/install.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-sampling,plot}"
venv="${FINWIDTH_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "finwidth setup: creating virtual environment $venv" >&2
  "$python" -m venv "$venv"
fi
vpy="$venv/bin/python"
pip_q=(-q --disable-pip-version-check)

case ",$extras," in
  *,sampling,*|*,all,*)
    if ! "$vpy" -c "import torch" >/dev/null 2>&1; then
      spec="torch==${FINWIDTH_TORCH:-2.13.0}"
      echo "finwidth setup: installing $spec" >&2
      if [ -n "${FINWIDTH_TORCH_INDEX:-}" ]; then
        "$vpy" -m pip install "${pip_q[@]}" "$spec" --extra-index-url "$FINWIDTH_TORCH_INDEX"
      else
        "$vpy" -m pip install "${pip_q[@]}" "$spec"
      fi
    fi
    ;;
esac

# Reinstall only when the package metadata or the extras changed.
stamp="$venv/.finwidth-setup-stamp"
want="$(sha256sum < pyproject.toml | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "finwidth setup: installing finwidth[$extras] (editable)" >&2
  "$vpy" -m pip install "${pip_q[@]}" -e ".[$extras]"
  echo "$want" > "$stamp"
fi
