"""Fixtures every tier may use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer
from tests.support.scratch import scratch_dir

# Fixtures more than one level uses, each module loaded once for the whole run: the e2e and
# security tests' servers, the callback tests' waiting approval, the workflow tests'
# time-skipping environment.
pytest_plugins = ["tests.support.stack", "tests.support.callback", "tests.support.workflow_environment"]

# Code under test that builds its own worker from the environment (CibaPlugin with `op`, the
# example programs) writes decision records to CIBA_RECORD_DB, by default in the working
# directory: here, a temporary file instead.
os.environ.setdefault("CIBA_RECORD_DB", str(scratch_dir("ciba-records-") / "records.sqlite3"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian's package), started once, removed at the end."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
