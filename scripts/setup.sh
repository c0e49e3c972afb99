#!/usr/bin/env bash
# Creates .venv with the project, its samples and its test tools, and installs the pinned test OP (npm ci).
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "Node.js 22 and npm are required (the test OP is the npm package oidc-provider)" >&2
  exit 2
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Node.js $(node --version) is too old: install Node.js 22 LTS (the test OP is oidc-provider 9)" >&2
  exit 2
elif [ "$node_major" -lt 22 ]; then
  # 20 still runs it; oidc-provider logs "Unsupported runtime" and 20 is past its end of life.
  echo "warning: Node.js $(node --version): the test OP supports Node.js 22 LTS; upgrade when you can" >&2
fi
# setuptools announces every editable install with a notice ("Editable installation ... Please
# be careful with folders in your working directory"), dozens of lines each time, whatever the
# layout: this filter drops that one informational warning, by its message, and nothing else.
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Editable installation:UserWarning"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# The samples (examples/): their own distribution, installed beside the library.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "examples[all]"
(cd examples/demo/op && npm ci --no-audit --no-fund --loglevel=error)
