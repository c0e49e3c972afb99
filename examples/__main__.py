"""`python -m temporal_ciba_examples` runs the `temporal-ciba-examples` command."""

from temporal_ciba_examples.cli import main

main()
