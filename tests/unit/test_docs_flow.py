"""The flow picture of the README and the docs is what its source renders.

docs/flow.svg is committed beside docs/flow.dot and scripts/render-flow.sh (Graphviz `dot`,
Debian's graphviz package, which scripts/test.sh installs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_svg_is_what_the_dot_source_renders() -> None:
    dot = shutil.which("dot")
    assert dot, "Graphviz's dot is missing: scripts/test.sh installs the Debian package graphviz"
    rendered = subprocess.run([dot, "-Tsvg", "docs/flow.dot"], cwd=ROOT, capture_output=True, check=True).stdout
    assert rendered == (ROOT / "docs" / "flow.svg").read_bytes(), "run scripts/render-flow.sh and commit docs/flow.svg"


def test_the_readme_and_the_docs_show_it() -> None:
    assert "](docs/flow.svg)" in (ROOT / "README.md").read_text()
    assert "](flow.svg)" in (ROOT / "docs" / "index.md").read_text()
