"""Who an MCP client is: OAuth 2.1 bearer access tokens validated against the configured issuer.

The MCP authorization specification makes an HTTP MCP server an OAuth resource server: every
request carries `Authorization: Bearer <access token>`, and the server answers 401 with its
protected-resource metadata otherwise. The tokens are checked exactly as the codec server checks
its callers' (temporal_ciba._programs.codec_server.OidcAccessTokens): an RFC 9068 access token
(`typ` at+jwt), signed by the issuer's keys, for this gateway's audience, unexpired.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.auth.provider import AccessToken

from temporal_ciba._programs.codec_server import MAX_TOKEN_CHARS, IssuerUnavailable, OidcAccessTokens, Refused
from temporal_ciba.mcp._calls import McpClient

log = logging.getLogger("temporal_ciba.mcp")


class OidcTokenVerifier:
    """An mcp TokenVerifier over OidcAccessTokens: the token's claims, or None (a 401)."""

    def __init__(self, tokens: OidcAccessTokens) -> None:
        self.tokens = tokens

    @classmethod
    def for_issuer(cls, issuer: str, audiences: list[str], *, required_scope: str | None = None) -> OidcTokenVerifier:
        """Access tokens of `issuer` (its discovery document's keys) for one of `audiences`."""
        return cls(OidcAccessTokens(issuer, audiences, required_scope=required_scope))

    async def verify_token(self, token: str) -> AccessToken | None:
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            return None
        try:
            claims = await self.tokens.validate(token)
        except Refused as refused:
            log.info("MCP gateway refused a bearer token: %s", refused)
            return None
        except IssuerUnavailable:
            return None
        granted = claims.get("scope", "")
        scopes = granted.split() if isinstance(granted, str) else [str(s) for s in granted or []]
        client_id = claims.get("client_id") or claims.get("azp") or ""
        return AccessToken(
            token=token,
            client_id=str(client_id),
            scopes=scopes,
            expires_at=int(claims["exp"]),
            subject=claims.get("sub"),
            claims={"iss": claims.get("iss")},
        )


def client_of(request: Any) -> McpClient | None:
    """The authenticated client of an HTTP request (starlette's `request.user`), or None."""
    scope = getattr(request, "scope", None)
    user = scope.get("user") if isinstance(scope, dict) else None
    token: AccessToken | None = getattr(user, "access_token", None)
    if token is None:
        return None
    issuer = (token.claims or {}).get("iss")
    return McpClient(subject=token.subject, client_id=token.client_id or None, issuer=str(issuer) if issuer else None)
