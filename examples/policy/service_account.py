"""A service account that asks a human only when its own risk score is above the threshold.

    python -m temporal_ciba_examples.policy.service_account --job rotate-keys --target billing --risk 0.9 --oncall alice

The job scores itself (`--risk`, here given; in production a model or a rule set), and the
example policy (policy.toml) decides: above 0.7 the on-call engineer approves with multi-factor
authentication; at or below it the job runs unasked, and its outcome says so (`policy.approval`
"none", no approver, no token). The job's activity re-checks what it was given: a job the
policy sent to a person runs only with that person's access token for exactly this job.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import uuid
from datetime import timedelta

from pydantic import BaseModel, Field, ValidationError
from temporalio import activity, workflow
from temporalio.client import Client

with workflow.unsafe.imports_passed_through():
    from temporal_ciba import ApprovalOutcome, ApprovalRequest, ConfigError, PolicyAction, open_access_token
    from temporal_ciba.agents import short_code
    from temporal_ciba.crypto import TokenSealer

from temporal_ciba import WORKER_POLICY, require_approval
from temporal_ciba_examples.policy.policy_runner import USE_EXISTING, main, parser, run_under_policy

JOB_TYPE = "service_job"


class ServiceJob(BaseModel):
    job: str = Field(min_length=1, max_length=60)
    target: str = Field(min_length=1, max_length=60)
    risk: float = Field(ge=0, le=1)
    oncall: str = Field(min_length=1, description="login_hint of the on-call engineer")

    def digest(self) -> str:
        action = {"job": self.job, "target": self.target}
        return hashlib.sha256(json.dumps(action, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ServiceJobCall(BaseModel):
    job: ServiceJob
    outcome: ApprovalOutcome


class ServiceJobResult(BaseModel):
    outcome: ApprovalOutcome
    ran: str | None = None


class ServiceJobActivities:
    def __init__(self, sealer: TokenSealer) -> None:
        self._sealer = sealer

    @activity.defn(name="example.run_service_job")
    async def run_service_job(self, call: ServiceJobCall) -> str:
        """Stands in for the job itself. A job a person was asked about needs their token."""
        asked = call.outcome.policy is None or call.outcome.policy.approval != "none"
        if asked:  # GrantRefused unless approved for exactly this job, in the calling run
            open_access_token(self._sealer, call.outcome, action_digest=call.job.digest())
        how = f"approved by {call.outcome.sub}" if asked else "unasked"
        return f"{call.job.job} on {call.job.target}: done ({how})"


@workflow.defn
class ServiceAccountWorkflow:
    @workflow.run
    async def run(self, job: ServiceJob) -> ServiceJobResult:
        digest = job.digest()
        request = ApprovalRequest(
            login_hint=job.oncall,
            binding_message=f"Run {job.job} on {job.target}, code {short_code(digest)}",
            authorization_details=[{"type": JOB_TYPE, "job": job.job, "target": job.target, "risk": job.risk}],
            action_digest=digest,
        )
        outcome = await require_approval(request, policy=WORKER_POLICY, action=PolicyAction.of(request, risk=job.risk))
        if not outcome.approved:
            return ServiceJobResult(outcome=outcome)
        ran = await workflow.execute_activity_method(
            ServiceJobActivities.run_service_job,
            ServiceJobCall(job=job, outcome=outcome),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return ServiceJobResult(outcome=outcome, ran=ran)


def arguments() -> argparse.ArgumentParser:
    options = parser("temporal_ciba_examples.policy.service_account", "A service job that asks only when it is risky.")
    options.add_argument("--job", required=True, help="e.g. rotate-keys")
    options.add_argument("--target", required=True, help="e.g. billing")
    options.add_argument("--risk", type=float, required=True, help="the job's own risk score, 0 to 1")
    options.add_argument("--oncall", default="alice", help="login_hint of the on-call engineer")
    return options


async def run_job(options: argparse.Namespace) -> int:
    try:
        job = ServiceJob(job=options.job, target=options.target, risk=options.risk, oncall=options.oncall)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--{first['loc'][0]}: {first['msg']}") from None
    workflow_id = options.workflow_id or f"service-job-{uuid.uuid4().hex[:10]}"

    async def start(client: Client, task_queue: str) -> ServiceJobResult:
        handle = await client.start_workflow(
            ServiceAccountWorkflow.run, job, id=workflow_id, task_queue=task_queue, id_conflict_policy=USE_EXISTING
        )
        print(f"service job workflow {workflow_id}: {job.job} on {job.target}, risk {job.risk}", flush=True)
        return await handle.result()

    result: ServiceJobResult = await run_under_policy(
        options,
        workflows=[ServiceAccountWorkflow],
        activities=lambda settings: [ServiceJobActivities(TokenSealer(settings.token_key_bytes)).run_service_job],
        start=start,
    )
    outcome = result.outcome
    if outcome.policy is not None:
        print(f"policy: rule {outcome.policy.rule} ({outcome.policy.approval}): {outcome.policy.reason}")
    print(f"approval: {outcome.status}: {outcome.reason}")
    print(f"job: {result.ran or 'not run'}")
    return 0 if result.ran is not None else 1


if __name__ == "__main__":
    parsed = arguments().parse_args()
    main(lambda: run_job(parsed))
