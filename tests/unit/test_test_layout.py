"""No test module imports another test module or a conftest.

What tests share lives in tests/support (shared fixtures reach a level through tests/conftest.py's
pytest_plugins), so a test file can be read, moved or deleted without breaking another one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
# The modules under tests/ that any test file may import: the shared helpers and fixtures, and
# the replay cases the recorder and the replay tests share.
SHARED = ("tests.support", "tests.replay.cases")


def python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "node_modules" not in path.parts)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """Every module `source` (a module of `package`) imports, with the line it is imported on.

    Each by its absolute name: a relative import is resolved against the package."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # `from tests.e2e import test_callback` imports a module, as `import tests.e2e.test_callback` does.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            found.append((node.lineno, base))
    return found


def shared(module: str) -> bool:
    return any(module == allowed or module.startswith(allowed + ".") for allowed in SHARED)


def is_test_code(module: str) -> bool:
    """A module of tests/ that is neither shared nor a package on the way to a shared one."""
    if module != "tests" and not module.startswith("tests."):
        return False
    return not shared(module) and not any(allowed.startswith(module + ".") for allowed in SHARED)


@pytest.mark.parametrize("path", python_files(), ids=lambda path: str(path.relative_to(TESTS)))
def test_imports_only_shared_test_code(path: Path) -> None:
    package = ".".join(path.relative_to(TESTS.parent).parts[:-1])
    imported = imported_modules(path.read_text(), package)
    wrong = sorted({f"line {line}: {module}" for line, module in imported if is_test_code(module)})
    assert not wrong, (
        f"{path.relative_to(TESTS.parent)} imports test modules (move what it needs to tests/support): {wrong}"
    )


def test_the_rule_sees_what_it_forbids() -> None:
    """The check above is not vacuous: each way of importing a test module or a conftest is caught."""
    cases = {
        "from tests.e2e.conftest import SECRET": True,
        "from tests.e2e.test_cli import run_cli": True,
        "from tests.e2e import test_callback as e2e": True,
        "import tests.unit.test_workflow_logic": True,
        "from tests import conftest": True,
        "from .test_cli import run_cli": True,
        "from . import conftest": True,
        "from tests.support.flows import INVOICE": False,
        "from tests.support import flows": False,
        "from tests.replay.cases import KEY": False,
        "from temporal_ciba.ciba import CibaClient": False,
    }
    for source, forbidden in cases.items():
        modules = [module for _, module in imported_modules(source, "tests.unit")]
        assert any(is_test_code(module) for module in modules) is forbidden, source
