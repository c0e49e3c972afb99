#!/usr/bin/env bash
# Sets up everything on a fresh machine (Python 3.11+ and Node.js 22 present) and runs every
# check: ruff, mypy and the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# Debian packages the tests use: Chromium for the approver page's browser test,
# docker-compose (which needs no Docker engine) to validate docker-compose.yml, Graphviz to
# check that docs/flow.svg is what docs/flow.dot renders, and PostgreSQL
# for the decision-record store's tests (they run initdb and postgres themselves; Debian keeps
# the server's programs off PATH, in /usr/lib/postgresql/<version>/bin).
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v dot >/dev/null || missing+=(graphviz)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "${missing[@]}" >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The documentation site: a broken link, a page left out of the nav or an API reference that
# does not resolve fails here (mkdocs.yml sets strict).
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
# Mutation testing of the validation rules (about 4 minutes on 2 cores): a rule deleted or
# loosened in temporal_ciba/ciba/_validation.py fails here. On a full run only (CI's); the
# other modules: `bash scripts/mutation.sh` (docs/contributing/mutation-testing.md).
# Its figures go to a temporary file: a test run leaves the tree's tracked files as they were.
# The small chaos run (docs/operations/chaos.md, about 2 minutes): 100 approvals of every kind
# through one fault of each kind, then its invariants; one broken fails here. On a full run only.
if [ $# -eq 0 ]; then
  MUTATION_RESULTS="$(mktemp -d)/mutation-results.json" bash scripts/mutation.sh validation
  .venv/bin/python -m tests.support.chaos --approvals 100 --faults 7 --duration 60 --expiry 40 --seed 12
fi
# Two processes, each taking whole test modules (their module-scoped servers stay in one);
# `-n 0` among the arguments runs them in this one (for -s, or a debugger).
exec .venv/bin/pytest -n 2 --dist loadfile --durations=25 "$@"
