"""The package's shape: layers that import only downward, a pinned public API, and no code
outside a package reaching into its private modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import temporal_ciba
import temporal_ciba.ciba
import temporal_ciba.crypto

REPO = Path(__file__).resolve().parents[2]

PUBLIC_API = [
    "CIBA_AUTH_REQ_ID",
    "CIBA_DEADLINE",
    "CIBA_STATUS",
    "AesGcmCodec",
    "ApprovalOutcome",
    "ApprovalRequest",
    "ApprovalState",
    "CibaActivities",
    "CibaApprovalWorkflow",
    "CibaPlugin",
    "ConfigError",
    "OPSettings",
    "OutcomeStatus",
    "PayloadDecryptionError",
    "PollingPolicy",
    "SealError",
    "SearchAttributesMissing",
    "TokenKeySettings",
    "TokenSealer",
    "WorkerSettings",
    "access_token_context",
    "ensure_search_attributes",
    "load_settings",
    "require_approval",
    "with_encryption",
    "GrantRefused",
    "idempotency_key",
    "open_access_token",
    "ApprovalPolicy",
    "PolicyAction",
    "PolicyRule",
    "WORKER_POLICY",
    "ApprovalWorkflowInput",
]


def test_layers_import_only_downward() -> None:
    """import-linter's contracts in pyproject.toml: the layer order, no Temporal in the protocol, and
    no import of the samples."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is missing from the test environment"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def test_public_api_is_pinned_and_complete() -> None:
    assert temporal_ciba.__all__ == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(temporal_ciba, name) is not None, name


def test_subpackages_export_what_they_list() -> None:
    for package in (temporal_ciba.ciba, temporal_ciba.crypto):
        assert sorted(package.__all__) == sorted(set(package.__all__)), package.__name__
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert missing == [], f"{package.__name__} lists names it does not define: {missing}"


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
