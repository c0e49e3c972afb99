"""The benchmark: `bash scripts/bench.sh` (see docs/contributing/benchmarks.md)."""
