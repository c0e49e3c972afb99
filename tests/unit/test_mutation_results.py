"""The mutation table in the docs is what scripts/mutation.sh measured.

mutation_check.py writes scripts/mutation-results.json and renders its table beside it; the
docs include that table. Edited by hand, it fails here."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "mutation-results.json"


def mutation_check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_the_rendering_of_the_figures() -> None:
    results = json.loads(RESULTS.read_text())
    assert RESULTS.with_suffix(".md").read_text() == mutation_check().render_table(results)


def test_every_recorded_group_exists_and_its_figures_add_up() -> None:
    script = (ROOT / "scripts" / "mutation.sh").read_text()
    groups = set(re.findall(r"^  \[([a-z-]+)\]=", script, re.MULTILINE))
    for group, figures in json.loads(RESULTS.read_text()).items():
        assert group in groups, f"{group} is no group of scripts/mutation.sh"
        parts = ("killed", "message_only", "equivalent", "unexplained")
        assert sum(figures[part] for part in parts) == figures["mutants"], group
