#!/usr/bin/env bash
# Sets up everything on a fresh machine (Python 3.11+ and Node.js 22 present) and runs the
# demo on embedded defaults: Temporal dev server + UI, the demo OP with its approver page, the
# callback service, the worker, the payment API and the codec server. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo's ports first (standard library only): a port in use is said now, not after the set-up.
"${PYTHON:-python3}" examples/demo/ports.py "$@"
source scripts/setup.sh
exec .venv/bin/temporal-ciba-examples demo "$@"
