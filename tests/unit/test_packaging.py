"""Building the package prints no setuptools deprecation (the demo builds it on every start in
an editable install) and its metadata names the license as an SPDX expression."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_build_does_not_warn_and_declares_the_license(tmp_path: Path) -> None:
    # A copy, so no egg-info lands in the shared checkout; the OP's node_modules are not packaged.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "temporal_ciba", source / "temporal_ciba", ignore=shutil.ignore_patterns("node_modules"))
    metadata = tmp_path / "metadata"
    metadata.mkdir()
    build = "import sys, setuptools.build_meta as b; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", build, str(metadata)],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "deprecated" not in output.lower(), output
    dist_info = metadata / result.stdout.strip().splitlines()[-1]
    assert "License-Expression: MIT" in (dist_info / "METADATA").read_text().splitlines()
