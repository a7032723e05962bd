#!/usr/bin/env bash
# Install (if needed) and run the test suite. Extra arguments go to pytest, e.g.
#   bash scripts/run_tests.sh -m "not slow"     # skip the heavy tests
#   bash scripts/run_tests.sh -q                # quieter; the summary line stays
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1
python -c "import torch, torchvision; print('[tests] torch', torch.__version__, '| torchvision', torchvision.__version__)"
# No -q of our own: a user's -q then still leaves pytest's summary line.
python -m pytest -p no:cacheprovider "$@"
