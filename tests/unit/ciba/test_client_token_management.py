"""Introspection (RFC 7662) and revocation (RFC 7009) by CibaClient, over an in-process HTTP transport.

Each rule named in its test (end to end against the real OP: tests/e2e/test_protocol_op.py)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from temporal_ciba.ciba import CibaClient, CibaError, ClientSecretBasic, ProtocolError
from temporal_ciba.crypto import DPoPKeys
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW

ENDPOINTS = {"introspection_endpoint": f"{ISSUER}/introspect", "revocation_endpoint": f"{ISSUER}/revoke"}
BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:secret".encode()).decode()


class OP:
    def __init__(self, metadata: dict[str, Any], answer: httpx.Response) -> None:
        self.metadata = metadata
        self.answer = answer
        self.requests: list[tuple[str, str | None, dict[str, list[str]]]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.metadata)
        self.requests.append(
            (str(request.url), request.headers.get("authorization"), parse_qs(request.content.decode()))
        )
        return self.answer


def client(op: OP) -> CibaClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    return CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http, clock=lambda: NOW)


async def test_introspection_rule_posts_the_token_as_the_client_and_returns_the_ops_view() -> None:
    op = OP({**METADATA, **ENDPOINTS}, httpx.Response(200, json={"active": True, "client_id": CLIENT_ID}))
    async with client(op) as ciba:
        assert await ciba.introspect("at-1") == {"active": True, "client_id": CLIENT_ID}
        await ciba.introspect("rt-1", token_type_hint="refresh_token")
    assert op.requests == [
        (ENDPOINTS["introspection_endpoint"], BASIC, {"token": ["at-1"], "token_type_hint": ["access_token"]}),
        (ENDPOINTS["introspection_endpoint"], BASIC, {"token": ["rt-1"], "token_type_hint": ["refresh_token"]}),
    ]


async def test_introspection_rule_needs_an_endpoint_and_a_json_object() -> None:
    async with client(OP(METADATA, httpx.Response(200, json={}))) as ciba:
        with pytest.raises(CibaError, match="no introspection_endpoint"):
            await ciba.introspect("at-1")
    async with client(OP({**METADATA, **ENDPOINTS}, httpx.Response(200, json=["active"]))) as ciba:
        with pytest.raises(ProtocolError):
            await ciba.introspect("at-1")


async def test_revocation_rule_posts_the_token_as_the_client() -> None:
    op = OP({**METADATA, **ENDPOINTS}, httpx.Response(200))
    async with client(op) as ciba:
        assert await ciba.revoke("at-1") is True
        assert await ciba.revoke("rt-1", token_type_hint="refresh_token") is True
    assert op.requests == [
        (ENDPOINTS["revocation_endpoint"], BASIC, {"token": ["at-1"], "token_type_hint": ["access_token"]}),
        (ENDPOINTS["revocation_endpoint"], BASIC, {"token": ["rt-1"], "token_type_hint": ["refresh_token"]}),
    ]


async def test_revocation_rule_is_false_without_an_endpoint_and_raises_an_ops_error() -> None:
    async with client(OP(METADATA, httpx.Response(200))) as ciba:
        assert await ciba.revoke("at-1") is False
    refused = httpx.Response(400, json={"error": "unsupported_token_type"})
    async with client(OP({**METADATA, **ENDPOINTS}, refused)) as ciba:
        with pytest.raises(CibaError, match="unsupported_token_type"):
            await ciba.revoke("at-1")


async def test_revocation_rule_a_dpop_bound_token_is_revoked_with_a_proof_for_the_revocation_endpoint() -> None:
    """RFC 9449 §5: the revocation request carries a DPoP proof of the key the tokens are bound to."""
    proofs: list[str] = []

    async def op(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={**METADATA, **ENDPOINTS})
        proofs.append(request.headers["dpop"])
        return httpx.Response(200)

    key = DPoPKeys(b"k" * 32).for_approval("req-1")
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    async with CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "s"), http=http) as ciba:
        assert await ciba.revoke("at-1", dpop_key=key) is True
    (proof,) = proofs
    claims = jwt.decode(proof, options={"verify_signature": False})
    assert jwt.get_unverified_header(proof)["jwk"] == key.public_jwk
    assert (claims["htm"], claims["htu"]) == ("POST", ENDPOINTS["revocation_endpoint"])
