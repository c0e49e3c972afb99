"""The two workflows the benchmark times: an agent that waits for a CIBA approval, and the
floor, a bare workflow that waits for a plain signal. Both report when they resumed."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporal_ciba.models import ApprovalRequest

from temporal_ciba.workflow import require_approval


class BenchAgentInput(BaseModel):
    tag: str
    approval_task_queue: str


class BenchAgentResult(BaseModel):
    status: str
    auth_req_id: str | None
    # workflow.now() when the agent resumed: the start of the workflow task after the approval.
    resumed_at: float


@workflow.defn
class BenchAgentWorkflow:
    @workflow.run
    async def run(self, input: BenchAgentInput) -> BenchAgentResult:
        outcome = await require_approval(
            ApprovalRequest(login_hint="alice", binding_message=f"Bench {input.tag}"),
            task_queue=input.approval_task_queue,
        )
        return BenchAgentResult(
            status=outcome.status, auth_req_id=outcome.auth_req_id, resumed_at=workflow.now().timestamp()
        )


@workflow.defn
class BareSignalWorkflow:
    def __init__(self) -> None:
        self._released = False

    @workflow.signal
    def release(self) -> None:
        self._released = True

    @workflow.run
    async def run(self) -> float:
        await workflow.wait_condition(lambda: self._released)
        return workflow.now().timestamp()
