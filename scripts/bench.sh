#!/usr/bin/env bash
# Runs the benchmark on this machine after scripts/setup.sh: prints a table, writes
# bench/results.json and bench/latency.png. Arguments go to bench/run.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[bench]"
exec .venv/bin/python -m bench.run "$@"
