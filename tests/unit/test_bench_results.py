"""The docs print the benchmark's figures exactly as `bench/results.json` holds them
(docs/contributing/benchmarks.md).

And they were measured on a commit of this repository's history (bench/run.py records it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.run import PHASES, SECTIONS, keep_other_phases, measured_on, table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = json.loads((ROOT / "bench" / "results.json").read_text())


def test_the_docs_table_is_the_one_results_json_makes() -> None:
    assert table(RESULTS) in (ROOT / "docs" / "contributing" / "benchmarks.md").read_text()


def test_the_figures_were_measured_on_a_commit_of_this_history() -> None:
    runs = [RESULTS["machine"], *(measured_on(RESULTS, phase) for phase in PHASES)]
    for run in runs:
        ancestor = subprocess.run(
            ["git", "merge-base", "--is-ancestor", run["commit"], "HEAD"],
            cwd=ROOT,
            capture_output=True,
        )
        assert ancestor.returncode == 0, f"results.json was measured on {run['commit']}, not an ancestor of HEAD"
        assert not run["uncommitted_changes"]


def test_every_section_with_figures_says_which_run_measured_it() -> None:
    for phase, sections in SECTIONS.items():
        if any(RESULTS[section] for section in sections):
            assert phase in RESULTS["measured"], phase


def test_a_run_of_one_phase_keeps_the_others_with_the_run_that_measured_them() -> None:
    later = {**RESULTS["machine"], "commit": "f" * 40, "date": "2099-01-01"}
    held = {
        "route": "ping, inline",
        "pending": 10_000,
        "seconds_until_all_pending": 600.0,
        "worker_rss_mib": 900.0,
        "worker_cpu_percent": 20.0,
        "temporal_server_cpu_percent": 30.0,
        "token_requests_per_second": 16.0,
        "seconds_to_complete_after_decisions": 3000.0,
        "approved": 10_000,
    }
    results: dict[str, Any] = {
        "machine": later,
        "measured": {"capacity": later},
        "latency": {},
        "latency_samples": {},
        "throughput": {},
        "capacity": [held],
        "history": {},
    }
    keep_other_phases(results, RESULTS, {"capacity"})
    assert results["latency"] == RESULTS["latency"]
    assert results["latency_samples"] == RESULTS["latency_samples"]
    assert results["throughput"] == RESULTS["throughput"]
    assert results["history"] == RESULTS["history"]
    assert results["capacity"] == [held]
    assert results["measured"]["latency"] == measured_on(RESULTS, "latency")
    assert results["measured"]["capacity"] == later
    assert f"(measured {measured_on(RESULTS, 'latency')['date']}, commit" in table(results)
