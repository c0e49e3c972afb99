"""Deterministic workflow code: no I/O, no clock but workflow.now(), no randomness but workflow.random()."""
