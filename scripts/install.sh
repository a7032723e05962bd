#!/usr/bin/env bash
# Creates ./.venv (or reuses it) and installs no_time_to_train with everything it needs.
# Idempotent: a second run only checks. Settings (environment variables):
#   VENV=path             another location for the virtual environment
#   CONSTRAINTS=file      the version constraints (default: constraints.txt, the tested set; empty: none)
#   TORCH_VERSION=x.y.z   a torch release of the supported range, with TORCHVISION_VERSION its torchvision
# A torch already installed in the environment (or a site-wide cap on it) is kept when it lies in the
# supported range. First install: about 5-10 minutes and 6 GB (torch's CUDA build, which also runs on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS-constraints.txt}
say() { echo "[install] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ -f "$VENV/.ntt_installed" ] && python -c "import no_time_to_train, sam2, timm, pytorch_lightning, supervision" 2>/dev/null; then
  say "environment in $VENV is ready"
  exit 0
fi

pip_c=()
[ -n "$CONSTRAINTS" ] && pip_c=(-c "$CONSTRAINTS")

say "step 1/4: pip, setuptools, wheel"
python -m pip install --quiet --upgrade pip setuptools wheel
# torch and torchvision as one consistent pair from the registry: a CPU-only torch next to the
# registry's CUDA torchvision breaks torchvision's C++ ops at import time.
if [ -n "${TORCH_VERSION:-}" ]; then
  torch_req=("torch==$TORCH_VERSION" "torchvision==${TORCHVISION_VERSION:?set TORCHVISION_VERSION with TORCH_VERSION}")
else
  torch_req=(torch torchvision)
fi
say "step 2/4: ${torch_req[*]} (the largest download: about 3-5 GB)"
python -m pip install --quiet "${pip_c[@]}" "${torch_req[@]}"
# sam2 is a source package whose build imports torch: build it against the torch above,
# without the optional CUDA extension (its only op has a CPU replacement in this project).
say "step 3/4: sam2 (built against the installed torch)"
SAM2_BUILD_CUDA=0 python -m pip install --quiet --no-build-isolation "${pip_c[@]}" "sam2>=1.1.0"
say "step 4/4: no_time_to_train and the other dependencies"
python -m pip install --quiet "${pip_c[@]}" -e ".[dev]"
python -c "import importlib.metadata, torch, torchvision, timm, pytorch_lightning, jsonargparse; print('[install] installed: torch', torch.__version__, '| torchvision', torchvision.__version__, '| sam2', importlib.metadata.version('sam2'), '| timm', timm.__version__, '| pytorch_lightning', pytorch_lightning.__version__, '| jsonargparse', jsonargparse.__version__)"
touch "$VENV/.ntt_installed"
