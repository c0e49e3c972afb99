"""An OP behind httpx.MockTransport for the activity tests, and their activity environment."""

from __future__ import annotations

import dataclasses

import httpx
import jwt
from temporalio.testing import ActivityEnvironment

from temporal_ciba._activities import CibaActivities
from temporal_ciba.ciba import CibaClient, ClientSecretBasic
from temporal_ciba.crypto import TokenSealer
from tests.support.tokens import (
    AUTH_REQ_ID,
    CLIENT_ID,
    ISSUER,
    METADATA,
    NOW,
    Keys,
)


def env(attempt: int = 1) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, workflow_id="wf", workflow_run_id="run", attempt=attempt)
    return environment


class MockOP:
    """An OP at ISSUER with a revocation endpoint and keys, recording the forms POSTed to it."""

    def __init__(self, *, revocation: bool = True, refuse_revocation: bool = False) -> None:
        # Whether the OP has a revocation endpoint, and whether it answers every revocation 400.
        self.revocation = revocation
        self.refuse_revocation = refuse_revocation
        self.keys = Keys()
        self.revoked: list[dict[str, str]] = []
        # The public key of each revocation's DPoP proof (RFC 9449 §4.2), None for a request without one.
        self.revocation_proof_keys: list[dict[str, str] | None] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            revocation = {"revocation_endpoint": f"{ISSUER}/revoke"} if self.revocation else {}
            return httpx.Response(200, json={**METADATA, **revocation})
        if path == "/jwks":
            return httpx.Response(200, json=self.keys.jwks_document())
        if path == "/bc":
            return httpx.Response(200, json={"auth_req_id": AUTH_REQ_ID, "expires_in": 120})
        if path == "/revoke":
            self.revoked.append(dict(httpx.QueryParams(request.content.decode())))
            proof = request.headers.get("DPoP")
            self.revocation_proof_keys.append(jwt.get_unverified_header(proof)["jwk"] if proof else None)
            if self.refuse_revocation:
                return httpx.Response(400, json={"error": "unsupported_token_type"})
            return httpx.Response(200)
        return httpx.Response(404)

    def activities(self, sealer: TokenSealer, *, requested_at: float, dpop: bool = False) -> CibaActivities:
        """The request is sent at `requested_at`; the tokens are validated at NOW. With `dpop`, the
        client binds an approval's tokens to its DPoP key (RFC 9449)."""
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        auth = ClientSecretBasic(CLIENT_ID, "secret")
        ciba = CibaClient(issuer=ISSUER, client_auth=auth, http=http, clock=lambda: NOW, dpop=dpop)
        return CibaActivities(ciba, sealer, clock=lambda: requested_at)
