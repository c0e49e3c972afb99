"""Signed authentication requests (CIBA §7.1.1) over an in-process HTTP transport.

What the JWT carries, which algorithm signs it, and when the client refuses to send one (end to end
against oidc-provider with FAPI on: tests/e2e/test_fapi_ciba.py)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from temporal_ciba.ciba import (
    AuthenticationRequest,
    CibaClient,
    ClientSigningKey,
    InvalidAuthenticationRequest,
    PrivateKeyJwt,
)
from temporal_ciba.ciba._request_object import (
    REQUEST_OBJECT_LIFETIME_SECONDS,
    request_object_claims,
    signed_request_form,
)
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW

RSA_KEY = rsa.generate_private_key(65537, 2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
DETAILS = [{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "1.00"}}]
REQUEST = AuthenticationRequest(
    scope="openid payments",
    login_hint="alice",
    binding_message="Pay EUR 1",
    requested_expiry=300,
    authorization_details=DETAILS,
)
# CIBA §4: the OP takes signed authentication requests with these algorithms.
SIGNS_ES256 = {"backchannel_authentication_request_signing_alg_values_supported": ["ES256"]}


class OP:
    def __init__(self, **metadata: Any) -> None:
        self.metadata = {**METADATA, "token_endpoint_auth_methods_supported": ["private_key_jwt"], **metadata}
        self.forms: list[dict[str, str]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.metadata)
        self.forms.append({name: values[0] for name, values in parse_qs(request.content.decode()).items()})
        return httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 120})


def client(op: OP, key: ClientSigningKey | None, *, sign: bool = True) -> CibaClient:
    auth = PrivateKeyJwt(CLIENT_ID, ClientSigningKey(key=EC_KEY, algorithms=("ES256",)))
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    return CibaClient(
        issuer=ISSUER, client_auth=auth, http=http, clock=lambda: NOW, request_signing_key=key, sign_requests=sign
    )


async def test_signed_request_carries_every_parameter_and_the_registered_claims_and_nothing_outside() -> None:
    op = OP(backchannel_authentication_request_signing_alg_values_supported=["ES256", "PS256"])
    key = ClientSigningKey(key=RSA_KEY, algorithms=("PS256", "RS256"), kid="rsa-1")
    async with client(op, key) as ciba:
        await ciba.authenticate(REQUEST)
    (form,) = op.forms
    # CIBA §7.1.1: no authentication request parameter outside the JWT, only client authentication.
    assert set(form) == {"request", "client_id", "client_assertion_type", "client_assertion"}
    header = jwt.get_unverified_header(form["request"])
    assert header["alg"] == "PS256" and header["kid"] == "rsa-1"  # the OP's list decides: never RS256
    at_now = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}  # NOW is a fixed time
    claims = jwt.decode(form["request"], RSA_KEY.public_key(), algorithms=["PS256"], audience=ISSUER, options=at_now)
    assert claims["iss"] == CLIENT_ID and claims["aud"] == ISSUER
    assert claims["iat"] == claims["nbf"] == int(NOW)
    assert claims["exp"] == int(NOW) + REQUEST_OBJECT_LIFETIME_SECONDS
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 22
    assert claims["scope"] == "openid payments" and claims["login_hint"] == "alice"
    assert claims["binding_message"] == "Pay EUR 1"
    assert claims["requested_expiry"] == 300 and claims["authorization_details"] == DETAILS


async def test_each_signed_request_has_its_own_jti() -> None:
    op = OP(**SIGNS_ES256)
    async with client(op, ClientSigningKey(key=EC_KEY, algorithms=("ES256",))) as ciba:
        await ciba.authenticate(REQUEST)
        await ciba.authenticate(REQUEST)
    jtis = {jwt.decode(f["request"], options={"verify_signature": False})["jti"] for f in op.forms}
    assert len(jtis) == 2


async def test_op_that_does_not_advertise_signed_requests_is_refused_before_sending() -> None:
    op = OP()  # CIBA §4: without the alg list, the OP does not support signed requests
    async with client(op, ClientSigningKey(key=EC_KEY, algorithms=("ES256",))) as ciba:
        with pytest.raises(InvalidAuthenticationRequest, match="backchannel_authentication_request_signing_alg"):
            await ciba.authenticate(REQUEST)
    assert op.forms == []


async def test_no_common_algorithm_is_refused_before_sending() -> None:
    op = OP(**SIGNS_ES256)
    async with client(op, ClientSigningKey(key=RSA_KEY, algorithms=("PS256",))) as ciba:
        with pytest.raises(InvalidAuthenticationRequest, match="signed authentication requests"):
            await ciba.authenticate(REQUEST)
    assert op.forms == []


async def test_op_that_requires_signed_request_objects_gets_them_unasked() -> None:
    op = OP(**SIGNS_ES256, require_signed_request_object=True)
    async with client(op, ClientSigningKey(key=EC_KEY, algorithms=("ES256",)), sign=False) as ciba:
        await ciba.authenticate(REQUEST)
    assert "request" in op.forms[0] and "login_hint" not in op.forms[0]


async def test_op_that_requires_signed_request_objects_without_a_key_is_refused_before_sending() -> None:
    op = OP(**SIGNS_ES256, require_signed_request_object=True)
    async with client(op, None, sign=False) as ciba:
        with pytest.raises(InvalidAuthenticationRequest, match="private key"):
            await ciba.authenticate(REQUEST)
    assert op.forms == []


async def test_unsigned_by_default() -> None:
    op = OP(**SIGNS_ES256)
    async with client(op, ClientSigningKey(key=EC_KEY, algorithms=("ES256",)), sign=False) as ciba:
        await ciba.authenticate(REQUEST)
    assert "request" not in op.forms[0] and op.forms[0]["login_hint"] == "alice"


async def test_each_refusal_before_sending_says_what_is_missing_in_full() -> None:
    without_algs = OP()
    async with client(without_algs, ClientSigningKey(key=EC_KEY, algorithms=("ES256",))) as ciba:
        with pytest.raises(InvalidAuthenticationRequest) as caught:
            await ciba.authenticate(REQUEST)
    assert str(caught.value) == (
        "the OP does not support signed authentication requests: its metadata has no "
        "backchannel_authentication_request_signing_alg_values_supported (CIBA §4)"
    )
    async with client(OP(**SIGNS_ES256), None) as ciba:
        with pytest.raises(InvalidAuthenticationRequest) as caught:
            await ciba.authenticate(REQUEST)
    assert str(caught.value) == (
        "signed authentication requests need the client's private key (CIBA §7.1.1), and none is configured"
    )


# request_object_claims and signed_request_form on their own -------------------------------------


def test_a_repeated_parameter_is_an_array_and_claims_a_json_object_in_the_request_object() -> None:
    form = {
        "scope": "openid",
        "resource": ["https://payments.example/", "https://ledger.example/"],
        "claims": '{"id_token":{"email":{"essential":true}}}',
        "requested_expiry": "120",
    }
    claims = request_object_claims(form, client_id=CLIENT_ID, audience=ISSUER, now=NOW)
    assert claims["resource"] == ["https://payments.example/", "https://ledger.example/"]
    assert claims["claims"] == {"id_token": {"email": {"essential": True}}}
    assert claims["requested_expiry"] == 120 and claims["scope"] == "openid"


def test_the_registered_claims_are_whole_seconds_and_override_the_form() -> None:
    form = {"scope": "openid", "iss": "someone-else", "aud": "https://elsewhere.example"}
    claims = request_object_claims(form, client_id=CLIENT_ID, audience=ISSUER, now=NOW + 0.75)
    assert (claims["iss"], claims["aud"]) == (CLIENT_ID, ISSUER)
    assert claims["iat"] == claims["nbf"] == int(NOW) and isinstance(claims["iat"], int)
    assert claims["exp"] == int(NOW) + REQUEST_OBJECT_LIFETIME_SECONDS and isinstance(claims["exp"], int)


def test_the_jti_is_24_random_bytes_in_base64url() -> None:
    jtis = {request_object_claims({}, client_id=CLIENT_ID, audience=ISSUER, now=NOW)["jti"] for _ in range(3)}
    assert len(jtis) == 3
    assert all(len(jti) == 32 and len(base64.urlsafe_b64decode(jti)) == 24 for jti in jtis)


def test_a_key_without_a_kid_signs_a_request_object_without_one() -> None:
    key = ClientSigningKey(key=EC_KEY, algorithms=("ES256",))
    form = signed_request_form(
        {"scope": "openid"}, client_id=CLIENT_ID, audience=ISSUER, signing_key=key, now=NOW, allowed_algs=None
    )
    assert set(form) == {"request"}
    header = jwt.get_unverified_header(form["request"])
    assert header == {"alg": "ES256", "typ": "JWT"}
    at_now = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
    claims = jwt.decode(form["request"], EC_KEY.public_key(), algorithms=["ES256"], audience=ISSUER, options=at_now)
    assert claims["scope"] == "openid" and claims["iss"] == CLIENT_ID


def test_no_common_algorithm_names_signed_authentication_requests_as_the_purpose() -> None:
    key = ClientSigningKey(key=RSA_KEY, algorithms=("PS256",))
    with pytest.raises(ValueError, match=r"algorithms PS256 for signed authentication requests$"):
        signed_request_form(
            {"scope": "openid"}, client_id=CLIENT_ID, audience=ISSUER, signing_key=key, now=NOW, allowed_algs=("ES256",)
        )
