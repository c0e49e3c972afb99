"""Every Python block in README.md and docs/ runs somewhere.

A block is one of three kinds, and any other fails:

- an include (`--8<-- "path"`, pymdownx.snippets): the file must be one a test runs, listed in
  INCLUDED with that test, which must name the file's module;
- in README.md, a quickstart file verbatim (tests/e2e/test_user_project.py runs the files and
  checks the README shows each as it is);
- anything else is executed here, in a module of its own (imports, definitions, decorators;
  `if __name__ == "__main__":` stays false), after a check that every name it uses, inside
  functions too, is defined in the block or is a builtin.

And the versions the docs say were tested are those installed here, which CI installs."""

from __future__ import annotations

import builtins
import re
import symtable
import types
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# The files a page may include, and the test that runs each (which names its module).
QUICKSTART = ("workflows/reset_account.py", "activities/accounts.py", "worker.py", "starter.py")
INCLUDED = {
    **{path: "tests/e2e/test_user_project.py" for path in QUICKSTART},
    "examples/payment_agent/activities.py": "tests/e2e/test_agents_pydantic_ai.py",
    "examples/pydantic_ai_payment/workflows.py": "tests/e2e/test_agents_pydantic_ai.py",
    "examples/pydantic_ai_payment/run.py": "tests/e2e/test_agents_pydantic_ai.py",
    "examples/openai_agents/support.py": "tests/e2e/test_agents_openai.py",
}

FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')


def blocks() -> list[tuple[str, int, str]]:
    """(page, line, code) of every ```python block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((str(page.relative_to(ROOT)), line, match.group(1)))
    return found


def normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


def includes(code: str) -> list[str] | None:
    """The paths a block includes, or None when it is code of its own."""
    lines = [line.strip() for line in code.strip().splitlines()]
    paths = [SNIPPET.match(line) for line in lines]
    if lines and all(paths):
        return [match.group(1) for match in paths if match]
    return None


def unresolved(code: str) -> set[str]:
    """Names the block uses that neither it nor builtins define, in any scope."""
    top = symtable.symtable(code, "<block>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    missing: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            looked_up_globally = table is top or symbol.is_global()
            if symbol.is_referenced() and looked_up_globally and not symbol.is_declared_global():
                name = symbol.get_name()
                if name not in bound and not hasattr(builtins, name):
                    missing.add(name)
        for child in table.get_children():
            walk(child)

    walk(top)
    return missing


BLOCKS = blocks()


def test_the_pages_have_python_blocks() -> None:
    pages = {page for page, _, _ in BLOCKS}
    assert "README.md" in pages and "docs/getting-started.md" in pages


def test_the_name_check_finds_an_undefined_name() -> None:
    assert unresolved("def f():\n    return sealer\n") == {"sealer"}
    assert unresolved("class A:\n    x = outcome.status\n") == {"outcome"}
    assert unresolved("from os import path\n\ndef f(x):\n    return [path.join(y) for y in x]\n") == set()


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS])
def test_the_block_runs_somewhere(page: str, line: int, code: str) -> None:
    paths = includes(code)
    if paths is not None:
        for path in paths:
            assert (ROOT / path).is_file(), f"{page}:{line} includes {path}, which does not exist"
            assert path in INCLUDED, f"{page}:{line} includes {path}, which no test listed here runs"
            test = (ROOT / INCLUDED[path]).read_text()
            module = path.removesuffix(".py").replace("/", ".").replace("examples.", "temporal_ciba_examples.", 1)
            name = module.rsplit(".", 1)[-1]
            assert module in test or f"{name}.py" in test or path in test, f"{INCLUDED[path]} does not run {path}"
        return
    if page == "README.md" and any(normalised(code) == normalised((ROOT / p).read_text()) for p in QUICKSTART):
        return  # a quickstart file verbatim: tests/e2e/test_user_project.py runs it and checks the copy
    missing = unresolved(code)
    assert not missing, f"{page}:{line}: undefined names {sorted(missing)}"
    namespace = types.ModuleType("docs_block")
    exec(compile(code, f"{page}:{line}", "exec"), namespace.__dict__)  # noqa: S102 - the docs' own code, the point of the test


def test_the_readme_shows_the_whole_quickstart() -> None:
    readme = normalised((ROOT / "README.md").read_text())
    for path in QUICKSTART:
        assert f"```python\n{normalised((ROOT / path).read_text())}```" in readme, path


def test_the_tested_versions_the_docs_state_are_installed() -> None:
    claims = []
    for page in PAGES:
        for sentence in re.findall(r"tested\s+with\s+(.*?)\)", page.read_text(), re.DOTALL):
            claims += [
                (page.name, name, stated) for name, stated in re.findall(r"`([\w.-]+)`\s+(\d+(?:\.\d+)+)", sentence)
            ]
    assert claims, "no page states a tested version"
    wrong = [(page, name, stated, version(name)) for page, name, stated in claims if version(name) != stated]
    assert not wrong, f"the docs state versions CI does not install (page, name, stated, installed): {wrong}"


def test_the_supported_ranges_the_docs_state_are_the_extras() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    stated = []
    for page in PAGES:
        stated += re.findall(r"Supported:\s+`([\w\[\].-]+)`\s+(>=[\d.]+,<[\d.]+)", page.read_text())
    assert stated, "no page states a supported range"
    wrong = [(name, spec) for name, spec in stated if f'"{name}{spec}"' not in pyproject]
    assert not wrong, f"the docs state ranges pyproject.toml's extras do not pin: {wrong}"
