"""An approval's secrets in the activities: its sealed tokens and its DPoP key.

Each token is sealed (temporal_ciba.crypto) for the one place that may open it.

Tokens never leave an activity in clear: the token response is sealed for the approval workflow
that asked, the access token for the workflow run that may act and its action
(temporal_ciba._grant), the ID token for the approval workflow that records it.
"""

from __future__ import annotations

from temporalio import activity

from temporal_ciba.ciba import CibaClient, DPoPKey, TokenResponse
from temporal_ciba.crypto import TokenSealer, access_token_context, id_token_context, tokens_context


class ApprovalSeals:
    """Seals and opens an approval's tokens, and derives its DPoP key, with one TokenSealer."""

    def __init__(self, sealer: TokenSealer, ciba: CibaClient) -> None:
        self._sealer = sealer
        self._ciba = ciba

    def dpop_key(self, auth_req_id: str) -> DPoPKey | None:
        """RFC 9449: the approval's DPoP key, the same on every worker (temporal_ciba.crypto._dpop_keys)."""
        return self._sealer.dpop_keys.for_approval(auth_req_id) if self._ciba.dpop else None

    def seal_tokens(self, tokens: TokenResponse, auth_req_id: str, workflow_id: str) -> str:
        """The whole token response, for the approval workflow that asked (to be validated)."""
        return self._sealer.seal(tokens.model_dump_json(), context=tokens_context(auth_req_id, workflow_id))

    def unseal_tokens(self, sealed: str, auth_req_id: str) -> TokenResponse:
        """Sealed tokens open only in the approval workflow they were sealed for."""
        context = tokens_context(auth_req_id, activity.info().workflow_id or "")
        return TokenResponse.model_validate_json(self._sealer.unseal(sealed, context=context))

    def seal_access_token(
        self, tokens: TokenResponse, auth_req_id: str, action_digest: str | None, workflow_id: str, run_id: str
    ) -> str:
        """Bound to the action and to the workflow run that asked (temporal_ciba._grant)."""
        context = access_token_context(auth_req_id, action_digest=action_digest, workflow_id=workflow_id, run_id=run_id)
        return self._sealer.seal(tokens.access_token.get_secret_value(), context=context)

    def open_access_token(
        self, sealed: str, auth_req_id: str, action_digest: str | None, workflow_id: str, run_id: str
    ) -> str:
        """An access token sealed by seal_access_token, opened to be revoked."""
        context = access_token_context(auth_req_id, action_digest=action_digest, workflow_id=workflow_id, run_id=run_id)
        return self._sealer.unseal(sealed, context=context)

    def seal_id_token(self, tokens: TokenResponse, auth_req_id: str) -> str:
        """The validated ID token, sealed for the approval workflow that validated it.

        It is the OP-signed evidence of the decision (temporal_ciba.records)."""
        context = id_token_context(auth_req_id, activity.info().workflow_id or "")
        return self._sealer.seal(tokens.id_token.get_secret_value(), context=context)
