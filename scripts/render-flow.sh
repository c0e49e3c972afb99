#!/usr/bin/env bash
# Renders the flow picture of the README and the docs: docs/flow.dot -> docs/flow.svg.
# Needs Graphviz's `dot` (Debian: apt-get install graphviz). Run it after editing docs/flow.dot
# and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
dot -Tsvg docs/flow.dot -o docs/flow.svg
