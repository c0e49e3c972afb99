#!/usr/bin/env bash
# The chaos run (docs/operations/chaos.md): the whole system on this machine, approvals through
# a schedule of faults, the invariants checked and printed as a table (exit 1 if one broke).
# Arguments go to tests/support/chaos.py (--help), e.g. `bash scripts/chaos.sh --approvals 100 --faults 7 --duration 60`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m tests.support.chaos "$@"
