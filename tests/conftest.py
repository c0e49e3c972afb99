"""Fixtures every tier may use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian's package), started once, removed at the end."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
