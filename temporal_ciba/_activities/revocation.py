"""RFC 7009 revocation of an approval's tokens that nobody will use.

Rejected ones, a refresh token (one approval is one use), and tokens that arrived after the
approval was cancelled.

Best effort: a failure is logged and the outcome stands; the tokens expire unused at the OP.
"""

from __future__ import annotations

from temporalio import activity

from temporal_ciba._activities.sealing import ApprovalSeals
from temporal_ciba._models import RevokeAccessTokenInput, RevokeTokensInput
from temporal_ciba.ciba import CibaClient, OAuthError, ProtocolError, TokenResponse, TransportError
from temporal_ciba.crypto import SealError


class Revoker:
    """Revokes an approval's tokens at the OP, with the approval's DPoP key."""

    def __init__(self, ciba: CibaClient, seals: ApprovalSeals) -> None:
        self._ciba = ciba
        self._seals = seals

    async def revoke_issued(self, tokens: TokenResponse, auth_req_id: str, *, refresh_only: bool) -> None:
        """Tokens still in the activity that received them; a failure is logged, the outcome stands."""
        try:
            if not refresh_only:
                await self._ciba.revoke(
                    tokens.access_token.get_secret_value(), dpop_key=self._seals.dpop_key(auth_req_id)
                )
            if tokens.refresh_token is not None:
                await self._ciba.revoke(
                    tokens.refresh_token.get_secret_value(),
                    token_type_hint="refresh_token",
                    dpop_key=self._seals.dpop_key(auth_req_id),
                )
        except (OAuthError, TransportError, ProtocolError) as exc:
            activity.logger.warning("revocation failed for auth_req_id=%s: %s", auth_req_id, type(exc).__name__)

    async def revoke_access_token(self, input: RevokeAccessTokenInput) -> bool:
        """An approved access token, sealed for its holder, that arrived after the approval was cancelled."""
        try:
            token = self._seals.open_access_token(
                input.sealed_access_token,
                input.auth_req_id,
                input.action_digest,
                input.holder_workflow_id,
                input.holder_run_id,
            )
            return await self._ciba.revoke(token, dpop_key=self._seals.dpop_key(input.auth_req_id))
        except SealError:
            return False
        except OAuthError as exc:
            activity.logger.warning("revocation refused for auth_req_id=%s: %s", input.auth_req_id, exc.error)
            return False

    async def revoke_tokens(self, input: RevokeTokensInput) -> bool:
        """A sealed token response nobody will use: the access token, then the refresh token."""
        try:
            tokens = self._seals.unseal_tokens(input.sealed_tokens, input.auth_req_id)
        except SealError:
            return False
        try:
            dpop_key = self._seals.dpop_key(input.auth_req_id)
            revoked = await self._ciba.revoke(tokens.access_token.get_secret_value(), dpop_key=dpop_key)
            if revoked and tokens.refresh_token is not None:
                await self._ciba.revoke(
                    tokens.refresh_token.get_secret_value(), token_type_hint="refresh_token", dpop_key=dpop_key
                )
        except OAuthError as exc:
            activity.logger.warning("revocation refused for auth_req_id=%s: %s", input.auth_req_id, exc.error)
            return False
        return revoked
