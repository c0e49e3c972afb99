"""Replay committed histories against today's workflow code: no server, a few seconds.

Each history in histories/ was recorded from the workflow code of its day (tests/replay/record.py).
A change to CibaApprovalWorkflow or PaymentAgentWorkflow that issues different commands for an
old history (an activity added, removed or reordered, a timer more or less, a child started
differently) fails here with a NondeterminismError, as it would fail every approval pending in
production when a worker with the new code picks it up. Guard such a change with
`workflow.patched(...)`, keep the old histories (cases.KEPT) and record new ones next to them;
never re-record just to make this test pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from temporal_ciba._plugin import CibaPlugin
from tests.replay.cases import HISTORIES, HISTORY_DIR, KEY, WORKFLOWS

FILES = sorted(HISTORY_DIR.glob("*.json"))


def test_every_expected_history_is_committed() -> None:
    names = {path.stem for path in FILES}
    assert names == set(HISTORIES), (
        f"missing {sorted(set(HISTORIES) - names)}, unexpected {sorted(names - set(HISTORIES))}"
    )


@pytest.fixture(scope="module")
def replayer() -> Replayer:
    # The plugin gives what a production worker has: the codec's converter and the sandbox passthrough.
    return Replayer(workflows=WORKFLOWS, plugins=[CibaPlugin(payload_key=KEY)])


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_replays_without_nondeterminism(replayer: Replayer, path: Path) -> None:
    history = WorkflowHistory.from_json(HISTORIES[path.stem], path.read_text())
    result = await replayer.replay_workflow(history)  # raises NondeterminismError on a mismatch
    assert result.replay_failure is None
