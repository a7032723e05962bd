#!/usr/bin/env bash
# Install (if needed) and run the test suite. Extra arguments go to pytest, e.g.
#   bash scripts/run_tests.sh -m "not slow"     # skip the heavy tests
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1
python -m pytest -q -p no:cacheprovider "$@"
