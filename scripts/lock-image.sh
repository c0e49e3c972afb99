#!/usr/bin/env bash
# Write deploy/image-requirements.txt: every Python package the Docker image installs (the
# dependencies of pyproject.toml with the postgres extra, and setuptools to build the project),
# each pinned to one version with the sha256 of every file PyPI has for it. The Dockerfile
# installs from it with `pip install --require-hashes`, so an image built later gets the same
# bytes or fails. Run it after changing pyproject.toml's dependencies (tests/unit/test_image_lock.py
# fails until the lock covers them); it needs PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$tools" "$work"' EXIT
python3.11 -m venv "$tools"
"$tools/bin/pip" install --quiet "pip-tools>=7.4,<8"
# pip-compile reads the project's metadata: pyproject.toml and what its build needs, nothing else.
cp pyproject.toml README.md "$work/"
mkdir "$work/temporal_ciba" && touch "$work/temporal_ciba/__init__.py"
(
    cd "$work"
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS='' CUSTOM_COMPILE_COMMAND="bash scripts/lock-image.sh" \
        "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
        --extra postgres --build-deps-for wheel --no-strip-extras \
        --index-url https://pypi.org/simple --no-emit-index-url \
        --output-file image-requirements.txt pyproject.toml
)
cp "$work/image-requirements.txt" deploy/image-requirements.txt
echo "wrote deploy/image-requirements.txt" >&2
