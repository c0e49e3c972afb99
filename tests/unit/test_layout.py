"""The package's shape: layers that import only downward, and no code outside a package
reaching into its private modules (the public API: test_public_api.py)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_layers_import_only_downward() -> None:
    """import-linter's contracts in pyproject.toml: the layer order, no Temporal in the protocol, and
    no import of the samples."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is missing from the test environment"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_private_modules_are_reached_only_from_their_own_package() -> None:
    """A private module (`_name`) serves its package and the packages inside it; the samples,
    the quickstart and the benchmark use the public names only. Tests may look inside."""
    offenders = []
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        if any(part in {".venv", "node_modules", "build", "tests"} for part in relative.parts):
            continue
        own_package = ".".join(relative.parent.parts)
        for module in _imported_modules(path):
            parts = module.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if parts[0] != "temporal_ciba" or not private:
                continue
            owner = ".".join(parts[: private[0]])
            if own_package != owner and not own_package.startswith(f"{owner}."):
                offenders.append(f"{relative}: {module}")
    assert offenders == []


def test_only_tests_import_the_tests() -> None:
    """The samples, the quickstart and the benchmark run without the test suite's helpers."""
    offenders = []
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        if any(part in {".venv", "node_modules", "build", "tests"} for part in relative.parts):
            continue
        offenders += [f"{relative}: {module}" for module in _imported_modules(path) if module.split(".")[0] == "tests"]
    assert offenders == []
