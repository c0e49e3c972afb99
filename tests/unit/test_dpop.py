"""DPoP (RFC 9449): the client's proofs, the key each approval derives, the token request's nonce
retry and token type, and the resource server's proof check (end to end: tests/e2e/test_dpop.py)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from temporal_ciba.ciba import CibaClient, ClientSecretBasic, Granted, ProtocolError, TransportError
from temporal_ciba.ciba.dpop import InvalidDPoPProof, access_token_hash, jwk_thumbprint, verify_proof
from temporal_ciba.crypto import DPoPKeys, TokenSealer
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA

NOW = 1_800_000_000.0
URL = "https://rs.example.test/payments"
KEY = DPoPKeys(b"k" * 32).for_approval("req-1")


def claims_of(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(proof), jwt.decode(proof, options={"verify_signature": False})


def test_proof_carries_the_public_key_and_the_request() -> None:
    header, claims = claims_of(KEY.proof(htm="POST", htu=URL, now=NOW, nonce="n-1", access_token="at-1"))
    assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
    assert header["jwk"] == KEY.public_jwk and "d" not in header["jwk"]
    assert claims["htm"] == "POST" and claims["htu"] == URL and claims["iat"] == int(NOW)
    assert claims["nonce"] == "n-1"
    assert claims["ath"] == base64.urlsafe_b64encode(hashlib.sha256(b"at-1").digest()).rstrip(b"=").decode()
    _, again = claims_of(KEY.proof(htm="POST", htu=URL, now=NOW))
    assert again["jti"] != claims["jti"] and "nonce" not in again and "ath" not in again


def test_thumbprint_is_rfc_7638() -> None:
    jwk = {"kty": "EC", "crv": "P-256", "x": "AAA", "y": "BBB", "kid": "ignored", "use": "sig"}
    canonical = b'{"crv":"P-256","kty":"EC","x":"AAA","y":"BBB"}'
    assert jwk_thumbprint(jwk) == base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert KEY.thumbprint == jwk_thumbprint(KEY.public_jwk)


def test_each_approval_has_its_own_key_the_same_on_every_worker() -> None:
    keys, same_key_elsewhere = DPoPKeys(b"k" * 32), TokenSealer(b"k" * 32).dpop_keys
    assert keys.for_approval("req-1").thumbprint == same_key_elsewhere.for_approval("req-1").thumbprint
    assert keys.for_approval("req-1").thumbprint != keys.for_approval("req-2").thumbprint
    assert DPoPKeys(b"j" * 32).for_approval("req-1").thumbprint != keys.for_approval("req-1").thumbprint
    assert "d" not in repr(keys.for_approval("req-1")) and repr(keys) == "DPoPKeys()"


def test_resource_server_accepts_a_proof_for_this_request_and_token() -> None:
    proof = KEY.proof(htm="POST", htu=URL, now=NOW, access_token="at-1")
    jkt, jti = verify_proof(proof, htm="POST", htu=URL, access_token="at-1", now=NOW + 3)
    assert jkt == KEY.thumbprint and jti == claims_of(proof)[1]["jti"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"htm": "GET"}, "htm, htu"),
        ({"htu": "https://rs.example.test/other"}, "htm, htu"),
        ({"access_token": "at-2"}, "ath"),
        ({"now": NOW + 120}, "iat"),
        ({"now": NOW - 120}, "iat"),
    ],
)
def test_resource_server_refuses_a_proof_for_another_request(change: dict[str, Any], message: str) -> None:
    proof = KEY.proof(htm="POST", htu=URL, now=NOW, access_token="at-1")
    expected: dict[str, Any] = {"htm": "POST", "htu": URL, "access_token": "at-1", "now": NOW, **change}
    with pytest.raises(InvalidDPoPProof, match=message):
        verify_proof(proof, **expected)


def test_resource_server_refuses_a_malformed_proof() -> None:
    claims = {"jti": "j", "htm": "POST", "htu": URL, "iat": int(NOW), "ath": access_token_hash("at-1")}
    private = KEY.private_key
    untyped = jwt.encode(claims, private, algorithm="ES256", headers={"jwk": KEY.public_jwk})
    with_private_jwk = jwt.encode(
        claims,
        private,
        algorithm="ES256",
        headers={"typ": "dpop+jwt", "jwk": {**KEY.public_jwk, "d": "secret"}},
    )
    other = DPoPKeys(b"o" * 32).for_approval("req-1")
    wrong_key = jwt.encode(
        claims, other.private_key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": KEY.public_jwk}
    )
    for proof, message in ((untyped, "typ"), (with_private_jwk, "public jwk"), (wrong_key, "signature"), ("x", "JWT")):
        with pytest.raises(InvalidDPoPProof, match=message):
            verify_proof(proof, htm="POST", htu=URL, access_token="at-1", now=NOW)


TOKENS = {"access_token": "at", "token_type": "DPoP", "id_token": "id.token.here", "expires_in": 60}


class NonceOP:
    """A token endpoint that wants a DPoP nonce (RFC 9449 §8) and records the proofs it got."""

    def __init__(self, token_type: str = "DPoP") -> None:
        self.proofs: list[dict[str, Any]] = []
        self.token_type = token_type

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=METADATA)
        assert parse_qs(request.content.decode())["auth_req_id"] == ["req-1"]
        _, claims = claims_of(request.headers["dpop"])
        self.proofs.append(claims)
        if claims.get("nonce") != "server-nonce":
            error = {"error": "use_dpop_nonce", "error_description": "nonce is required in the DPoP proof"}
            return httpx.Response(400, json=error, headers={"dpop-nonce": "server-nonce"})
        return httpx.Response(200, json={**TOKENS, "token_type": self.token_type})


def client(op: NonceOP | ScriptedOP) -> CibaClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    return CibaClient(
        issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "s"), http=http, clock=lambda: NOW, dpop=True
    )


async def test_token_request_retries_once_with_the_ops_nonce_and_keeps_it() -> None:
    op = NonceOP()
    async with client(op) as ciba:
        result = await ciba.request_token("req-1", dpop_key=KEY)
        assert isinstance(result, Granted) and result.tokens.token_type == "DPoP"
        await ciba.request_token("req-1", dpop_key=KEY)
    assert [proof.get("nonce") for proof in op.proofs] == [None, "server-nonce", "server-nonce"]
    assert {proof["htu"] for proof in op.proofs} == {METADATA["token_endpoint"]}
    assert len({proof["jti"] for proof in op.proofs}) == 3


async def test_a_bearer_token_in_answer_to_a_proof_is_a_downgrade() -> None:
    async with client(NonceOP(token_type="Bearer")) as ciba:
        with pytest.raises(ProtocolError, match="expected DPoP"):
            await ciba.request_token("req-1", dpop_key=KEY)


class ScriptedOP:
    """A token endpoint that gives its answers in turn and records the DPoP proofs it got."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.proofs: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=METADATA)
        self.proofs.append(claims_of(request.headers["dpop"])[1])
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def use_nonce(status: int = 400) -> httpx.Response:
    return httpx.Response(status, json={"error": "use_dpop_nonce"}, headers={"dpop-nonce": "server-nonce"})


def tokens(**headers: str) -> httpx.Response:
    return httpx.Response(200, json=TOKENS, headers=headers)


async def test_a_401_asking_for_a_nonce_is_sent_again_with_it() -> None:
    op = ScriptedOP(use_nonce(401), tokens())
    async with client(op) as ciba:
        assert isinstance(await ciba.request_token("req-1", dpop_key=KEY), Granted)
    assert [proof.get("nonce") for proof in op.proofs] == [None, "server-nonce"]


async def test_a_nonce_that_comes_with_tokens_is_kept_for_the_next_proof_and_nothing_is_sent_again() -> None:
    op = ScriptedOP(tokens(**{"dpop-nonce": "server-nonce"}), tokens())
    async with client(op) as ciba:
        assert isinstance(await ciba.request_token("req-1", dpop_key=KEY), Granted)
        assert len(op.proofs) == 1
        assert isinstance(await ciba.request_token("req-1", dpop_key=KEY), Granted)
    assert [proof.get("nonce") for proof in op.proofs] == [None, "server-nonce"]


async def test_a_refusal_that_is_not_json_is_not_sent_again_even_with_a_nonce() -> None:
    not_json = httpx.Response(400, content=b"<html>bad request</html>", headers={"dpop-nonce": "server-nonce"})
    op = ScriptedOP(not_json, tokens())
    async with client(op) as ciba:
        with pytest.raises(ProtocolError, match="not JSON"):
            await ciba.request_token("req-1", dpop_key=KEY)
    assert len(op.proofs) == 1


async def test_a_transport_failure_of_the_request_sent_again_names_the_endpoint() -> None:
    op = ScriptedOP(use_nonce(), httpx.ConnectError("boom"))
    async with client(op) as ciba:
        with pytest.raises(TransportError) as caught:
            await ciba.request_token("req-1", dpop_key=KEY)
    assert str(caught.value) == "token endpoint: ConnectError: boom"
    assert [proof.get("nonce") for proof in op.proofs] == [None, "server-nonce"]
