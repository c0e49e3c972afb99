"""Runs a Temporal worker for the CIBA approval workflows (same as `temporal-ciba worker`)."""

import sys

from temporal_ciba.cli import main

if __name__ == "__main__":
    main(["worker", *sys.argv[1:]])
