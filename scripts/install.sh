#!/usr/bin/env bash
# Creates ./.venv (or reuses it) and installs no_time_to_train with everything it needs.
# Idempotent: a second run only checks. Set VENV=path to use another location.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ -f "$VENV/.ntt_installed" ] && python -c "import no_time_to_train, sam2, timm, pytorch_lightning" 2>/dev/null; then
  echo "[install] environment in $VENV is ready"
  exit 0
fi

# torch and torchvision as the registry's consistent pair; a CPU-only torch pin with the
# registry's CUDA torchvision breaks torchvision's C++ ops at import time.
python -m pip install --quiet --upgrade pip setuptools wheel
python -m pip install --quiet torch torchvision
# sam2 is a source package whose build imports torch: build it against the torch above,
# without the optional CUDA extension (its only op has a CPU replacement in this project).
SAM2_BUILD_CUDA=0 python -m pip install --quiet --no-build-isolation "sam2>=1.1.0"
python -m pip install --quiet -e ".[dev]"
python -c "import torch, torchvision, sam2, timm, pytorch_lightning; print('[install] torch', torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__, '| lightning', pytorch_lightning.__version__)"
touch "$VENV/.ntt_installed"
