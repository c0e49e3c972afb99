"""Keys and ID tokens made in the test, for validation tests on literal claims."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from temporal_ciba.ciba._binding import AUTH_REQ_ID_CLAIM, RequestBinding
from temporal_ciba.ciba._jwks import PublicKey, parse_jwks
from temporal_ciba.ciba._token import TokenResponse
from temporal_ciba.ciba._validation import token_hash

ISSUER = "https://op.example.test"
# A minimal discovery document of an OP at ISSUER, for in-process HTTP transports.
METADATA = {
    "issuer": ISSUER,
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "backchannel_authentication_endpoint": f"{ISSUER}/bc",
    "backchannel_token_delivery_modes_supported": ["poll"],
}
CLIENT_ID = "agent-client"
AUTH_REQ_ID = "req-1234567890"
NOW = 1_800_000_000.0
ACCESS_TOKEN = "at-" + "a" * 40
REFRESH_TOKEN = "rt-" + "r" * 40
DETAILS = [
    {
        "type": "payment_initiation",
        "instructedAmount": {"currency": "EUR", "amount": "120.00"},
        "creditorName": "ACME GmbH",
    }
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    """The OP's keys (one RSA, one EC P-256), an attacker's RSA key, and the OP's JWKS."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks_document(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        return {"keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1", "use": "sig"}]}

    def jwks(self) -> list[PublicKey]:
        return parse_jwks(self.jwks_document())

    def sign(
        self,
        claims: dict[str, Any],
        *,
        alg: str = "RS256",
        kid: str | None = "rsa-1",
        key: Any = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        if key is None:
            key = self.ec if alg.startswith("ES") else self.rsa
        extra = {"kid": kid} if kid else {}
        return jwt.encode(claims, key, algorithm=alg, headers={**extra, **(headers or {})})

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid ID token payload for AUTH_REQ_ID; a value of None removes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "alice",
        "iat": int(NOW) - 5,
        "exp": int(NOW) + 600,
        "auth_time": int(NOW) - 10,
        "acr": "urn:example:acr:mfa",
        "amr": ["pwd", "hwk"],
        AUTH_REQ_ID_CLAIM: AUTH_REQ_ID,
        "at_hash": token_hash(ACCESS_TOKEN, "RS256"),
        "rt_hash": token_hash(REFRESH_TOKEN, "RS256"),
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token_response(id_token: str, **overrides: Any) -> TokenResponse:
    body: dict[str, Any] = {
        "access_token": ACCESS_TOKEN,
        "token_type": "Bearer",
        "id_token": id_token,
        "refresh_token": REFRESH_TOKEN,
        "expires_in": 600,
        "scope": "openid payments",
        "authorization_details": DETAILS,
    }
    body.update(overrides)
    return TokenResponse.model_validate({name: value for name, value in body.items() if value is not None})


def binding(**overrides: Any) -> RequestBinding:
    base: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "auth_req_id": AUTH_REQ_ID,
        "requested_at": NOW - 30,
        "scope": "openid payments",
        "acr_values": "urn:example:acr:mfa",
        "authorization_details": DETAILS,
        "expected_subject": "alice",
        "delivery_mode": "poll",
    }
    base.update(overrides)
    return RequestBinding.model_validate(base)
