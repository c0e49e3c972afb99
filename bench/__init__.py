"""The benchmark: `bash scripts/bench.sh` (see the README)."""
