"""DPoP (RFC 9449).

The client's proofs, the key each approval derives, the token request's nonce retry and token type,
and the resource server's proof check (end to end: tests/e2e/test_dpop.py)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from temporal_ciba.ciba import CibaClient, ClientSecretBasic, Granted, ProtocolError, TransportError
from temporal_ciba.ciba._dpop import InvalidDPoPProof, access_token_hash, jwk_thumbprint, verify_proof
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


# Thumbprints, the key's public half, and the resource server's check, rule by rule --------------

# RFC 7638 §3.1's RSA key and RFC 8037 Appendix A.3's Ed25519 key, with the thumbprints they give.
RFC_7638_RSA = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
    "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQ"
    "vRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC_8037_ED25519 = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


def test_thumbprints_of_rsa_and_okp_keys_are_the_rfcs_examples() -> None:
    assert jwk_thumbprint(RFC_7638_RSA) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert jwk_thumbprint(RFC_8037_ED25519) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"crv": "P-256", "x": "AAA", "y": "BBB"},
        {"kty": "EC", "crv": "P-256", "x": "AAA"},
        {"kty": "EC", "crv": "P-256", "x": "AAA", "y": 7},
        {"kty": "RSA", "n": "AAA"},
        {"kty": "OKP", "x": "AAA"},
    ],
    ids=["symmetric", "no_kty", "ec_without_y", "ec_y_not_a_string", "rsa_without_e", "okp_without_crv"],
)
def test_thumbprint_refuses_an_unknown_or_incomplete_key(jwk: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unsupported or incomplete JWK"):
        jwk_thumbprint(jwk)


def test_access_token_hash_is_base64url_sha256_without_padding() -> None:
    digest = hashlib.sha256(b"at-1").digest()
    assert access_token_hash("at-1") == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert "=" not in access_token_hash("at-1")


def test_the_public_jwk_holds_the_p256_public_members_only() -> None:
    jwk = KEY.public_jwk
    assert set(jwk) == {"kty", "crv", "x", "y"} and (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
    numbers = KEY.private_key.public_key().public_numbers()
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == numbers.x.to_bytes(32, "big")


def test_the_dpop_keys_repr_shows_its_thumbprint_only() -> None:
    assert repr(KEY) == f"DPoPKey(jkt={KEY.thumbprint!r})"


def test_proof_iat_is_whole_seconds() -> None:
    _, claims = claims_of(KEY.proof(htm="POST", htu=URL, now=NOW + 0.9))
    assert claims["iat"] == int(NOW) and isinstance(claims["iat"], int)


RSA_KEY = rsa.generate_private_key(65537, 2048)
RSA_PUBLIC_JWK = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))


def _signed(claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        claims, KEY.private_key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": KEY.public_jwk, **header}
    )


def _claims(**changes: Any) -> dict[str, Any]:
    claims = {"jti": "j-1", "htm": "POST", "htu": URL, "iat": int(NOW), "ath": access_token_hash("at-1"), **changes}
    return {name: value for name, value in claims.items() if value is not None}


def _verify(proof: str, now: float = NOW) -> tuple[str, str]:
    return verify_proof(proof, htm="POST", htu=URL, access_token="at-1", now=now)


def test_resource_server_accepts_a_ps256_proof_with_an_rsa_key() -> None:
    proof = jwt.encode(_claims(), RSA_KEY, algorithm="PS256", headers={"typ": "dpop+jwt", "jwk": RSA_PUBLIC_JWK})
    assert _verify(proof) == (jwk_thumbprint(RSA_PUBLIC_JWK), "j-1")


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode(_claims(), "a-shared-secret-of-32-bytes-long", algorithm="HS256", headers={"typ": "dpop+jwt"}),
        jwt.encode(_claims(), RSA_KEY, algorithm="RS256", headers={"typ": "dpop+jwt", "jwk": RSA_PUBLIC_JWK}),
        jwt.encode(_claims(), KEY.private_key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": "not-a-jwk"}),
        jwt.encode(_claims(), KEY.private_key, algorithm="ES256", headers={"typ": "dpop+jwt"}),
    ],
    ids=["hs256", "rs256", "jwk_not_an_object", "no_jwk"],
)
def test_resource_server_refuses_another_algorithm_or_no_public_jwk(token: str) -> None:
    with pytest.raises(InvalidDPoPProof, match="ES256 or PS256 signature and a public jwk"):
        _verify(token)


@pytest.mark.parametrize("missing", ["jti", "htm", "htu", "iat"])
def test_resource_server_refuses_a_proof_without_a_required_claim(missing: str) -> None:
    with pytest.raises(InvalidDPoPProof, match="signature or claims"):
        _verify(_signed(_claims(**{missing: None})))


def test_resource_server_ignores_claims_it_does_not_check_such_as_aud() -> None:
    assert _verify(_signed(_claims(aud="https://elsewhere.example"))) == (KEY.thumbprint, "j-1")


@pytest.mark.parametrize("age", [65, -65])
def test_resource_server_accepts_a_proof_at_the_edge_of_its_window(age: int) -> None:
    """60 seconds and the 5 seconds of leeway, either side of now."""
    assert _verify(_signed(_claims()), now=NOW + age) == (KEY.thumbprint, "j-1")


@pytest.mark.parametrize("age", [65.5, -65.5])
def test_resource_server_refuses_a_proof_just_outside_its_window(age: float) -> None:
    with pytest.raises(InvalidDPoPProof, match="iat"):
        _verify(_signed(_claims()), now=NOW + age)


def test_the_leeway_widens_the_window() -> None:
    proof = _signed(_claims())
    assert verify_proof(proof, htm="POST", htu=URL, access_token="at-1", now=NOW + 70, leeway=10) == (
        KEY.thumbprint,
        "j-1",
    )
    with pytest.raises(InvalidDPoPProof, match="iat"):
        verify_proof(proof, htm="POST", htu=URL, access_token="at-1", now=NOW + 62, leeway=0)


def test_resource_server_refuses_an_iat_that_is_not_whole_seconds() -> None:
    with pytest.raises(InvalidDPoPProof, match="iat"):
        _verify(_signed(_claims(iat=int(NOW) + 0.5)))


def test_resource_server_refuses_a_proof_without_ath() -> None:
    with pytest.raises(InvalidDPoPProof, match="ath"):
        _verify(_signed(_claims(ath=None)))


@pytest.mark.parametrize("jti", ["", 7], ids=["empty", "not_a_string"])
def test_resource_server_refuses_a_proof_whose_jti_is_empty_or_not_a_string(jti: Any) -> None:
    with pytest.raises(InvalidDPoPProof):
        _verify(_signed(_claims(jti=jti)))


def test_the_headers_alg_reads_the_jwk_whatever_alg_member_it_carries() -> None:
    """A key also used for key agreement may say so in its JWK; the proof's alg still decides."""
    proof = _signed(_claims(), jwk={**KEY.public_jwk, "alg": "ECDH-ES"})
    assert _verify(proof) == (KEY.thumbprint, "j-1")


def test_each_proofs_jti_is_24_random_bytes_in_base64url() -> None:
    jtis = {claims_of(KEY.proof(htm="POST", htu=URL, now=NOW))[1]["jti"] for _ in range(3)}
    assert len(jtis) == 3
    assert all(len(jti) == 32 and len(base64.urlsafe_b64decode(jti)) == 24 for jti in jtis)


@pytest.mark.parametrize("now", [1_000_000_000, 4_000_000_000], ids=["2001", "2096"])
def test_the_proofs_iat_is_checked_against_the_callers_now_not_the_machines_clock(now: int) -> None:
    assert _verify(_signed(_claims(iat=now)), now=now) == (KEY.thumbprint, "j-1")
