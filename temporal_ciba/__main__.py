"""`python -m temporal_ciba`: the `temporal-ciba` command."""

from temporal_ciba._cli import main

main()
