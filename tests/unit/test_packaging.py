"""Building the package prints no setuptools deprecation (the demo builds it on every start in
an editable install), its metadata names the license as an SPDX expression, and its wheel holds
only the library."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
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


# What the checkout holds besides sources: never copied into the build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".demo"
)


def test_the_wheel_holds_only_the_library(tmp_path: Path) -> None:
    """Built from a copy of the whole checkout (the samples, the quickstart and the benchmark
    beside the package): only temporal_ciba/ and the wheel's metadata; no Node or HTML files."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    dist = tmp_path / "dist"
    dist.mkdir()
    build = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", build, str(dist)], cwd=source, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    wheel = dist / result.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    assert "temporal_ciba/__init__.py" in names and "temporal_ciba/py.typed" in names
    outside = [name for name in names if not name.startswith(("temporal_ciba/", "temporal_ciba-0.1.0.dist-info/"))]
    assert outside == []
    assert [name for name in names if name.endswith((".mjs", ".html", "package.json", ".toml"))] == []
    assert [name for name in names if "example" in name] == []
