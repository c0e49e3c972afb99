#!/usr/bin/env bash
# Sets up everything on a fresh machine (Python 3.11+ and Node.js 20+ present) and runs every
# check: ruff, mypy and the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
