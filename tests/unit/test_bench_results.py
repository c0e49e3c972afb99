"""The README prints the benchmark's figures exactly as `bench/results.json` holds them, and
they were measured on a commit of this repository's history (bench/run.py records it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.run import table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = json.loads((ROOT / "bench" / "results.json").read_text())


def test_the_readme_table_is_the_one_results_json_makes() -> None:
    assert table(RESULTS) in (ROOT / "README.md").read_text()


def test_the_figures_were_measured_on_a_commit_of_this_history() -> None:
    commit = RESULTS["machine"]["commit"]
    ancestor = subprocess.run(
        ["git", "merge-base", "--is-ancestor", commit, "HEAD"],
        cwd=ROOT,
        capture_output=True,
    )
    assert ancestor.returncode == 0, f"results.json was measured on {commit}, not an ancestor of HEAD"
    assert not RESULTS["machine"]["uncommitted_changes"]
