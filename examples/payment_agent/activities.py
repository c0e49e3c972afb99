"""The payment agent's one side effect: pay, with the approved access token, exactly once."""

from __future__ import annotations

import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_ciba import ApprovalOutcome, GrantRefused, idempotency_key, open_access_token
from temporal_ciba.agents import ApprovedToolCall, open_tool_call
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.payment_agent.models import (
    ExecutePaymentInput,
    PaymentAction,
    PaymentReceipt,
    action_digest,
    authorization_details,
)


class PaymentActivities:
    """Calls the payment API; the API itself checks the token by introspection at the OP."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, sealer: TokenSealer, *, dpop: bool = False) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._sealer = sealer
        # RFC 9449: the tokens are DPoP-bound (CIBA_DPOP); present them with a proof of the key.
        self._dpop = dpop

    @activity.defn(name="payments.execute_payment")
    async def execute_payment(self, input: ExecutePaymentInput) -> PaymentReceipt:
        outcome = input.outcome
        # The action about to run must be exactly the one approved: its digest (bound into the
        # sealed token), and the authorization_details the human saw and the OP granted.
        digest = action_digest(input.action)
        if outcome.approved and outcome.authorization_details != authorization_details(input.action, digest):
            raise ApplicationError(
                "the approval's authorization_details do not describe this payment",
                type="ActionMismatch",
                non_retryable=True,
            )
        try:
            # Opens only in the workflow run that asked, for this digest (activity.info()).
            access_token = open_access_token(self._sealer, outcome, action_digest=digest)
        except GrantRefused as exc:
            raise ApplicationError(str(exc), type="GrantRefused", non_retryable=True) from None
        return await self._post(input.action, digest, outcome, access_token)

    @activity.defn(name="payments.pay_tool_call")
    async def pay_tool_call(self, call: ApprovedToolCall) -> PaymentReceipt:
        """The PydanticAI agent's `pay` tool (examples/pydantic_ai_payment): the same payment,
        approved as a tool call bound to the payment's action digest."""
        action = PaymentAction.model_validate(call.arguments["payment"])
        digest = action_digest(action)
        try:
            # Opens only in the workflow run that asked, for exactly this payment.
            access_token = open_tool_call(self._sealer, call, action_digest=digest)
        except GrantRefused as exc:
            raise ApplicationError(str(exc), type="GrantRefused", non_retryable=True) from None
        # required (the default): a call without an approval raised GrantRefused above.
        assert access_token is not None and call.outcome is not None
        if call.outcome.authorization_details != authorization_details(action, digest):
            raise ApplicationError(
                "the approval's authorization_details do not describe this payment",
                type="ActionMismatch",
                non_retryable=True,
            )
        return await self._post(action, digest, call.outcome, access_token)

    async def _post(
        self, action: PaymentAction, digest: str, outcome: ApprovalOutcome, access_token: str
    ) -> PaymentReceipt:
        key = idempotency_key(outcome)
        url = f"{self._api_url}/payments"
        headers = {"authorization": f"Bearer {access_token}", "idempotency-key": key}
        if self._dpop and outcome.auth_req_id is not None:
            dpop_key = self._sealer.dpop_keys.for_approval(outcome.auth_req_id)
            headers["authorization"] = f"DPoP {access_token}"
            headers["dpop"] = dpop_key.proof(htm="POST", htu=url, now=time.time(), access_token=access_token)
        try:
            response = await self._http.post(
                url,
                json={**action.model_dump(), "action_digest": digest},
                headers=headers,
                timeout=httpx.Timeout(15.0, connect=5.0),
            )
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"payment API unreachable: {type(exc).__name__}", type="PaymentApiUnavailable"
            ) from None
        if response.status_code >= 500:
            raise ApplicationError(f"payment API answered HTTP {response.status_code}", type="PaymentApiUnavailable")
        if response.status_code not in (200, 201):
            error = (
                response.json().get("error", "refused")
                if response.headers.get("content-type", "").startswith("application/json")
                else "refused"
            )
            raise ApplicationError(
                f"payment refused: HTTP {response.status_code} {error}", type="PaymentRefused", non_retryable=True
            )
        body = response.json()
        activity.logger.info("payment %s done (duplicate=%s)", body["payment_id"], body.get("duplicate", False))
        return PaymentReceipt(
            payment_id=body["payment_id"],
            idempotency_key=key,
            duplicate=bool(body.get("duplicate", False)),
        )
