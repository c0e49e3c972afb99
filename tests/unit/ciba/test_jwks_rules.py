"""Which JWKS keys are usable, and for which algorithm (RFC 7517 §4, RFC 7518 §3.1).

Each rule named in its test (the refetch rule: test_jwks.py, and against the real OP
test_jwks_rotation.py)."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from temporal_ciba.ciba._jwks import PublicKey, key_fits_algorithm, parse_jwks

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()


def jwk(algorithm: type[jwt.algorithms.Algorithm], key: object, **members: object) -> dict[str, object]:
    return {**json.loads(algorithm.to_jwk(key)), **members}


def test_usable_key_rule_keeps_public_signing_keys_of_every_asymmetric_type_in_order() -> None:
    document = {
        "keys": [
            "not a key",
            {**jwk(jwt.algorithms.RSAAlgorithm, RSA.public_key()), "kid": "enc", "use": "enc"},
            {**jwk(jwt.algorithms.RSAAlgorithm, RSA), "kid": "private"},  # carries "d"
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            jwk(jwt.algorithms.RSAAlgorithm, RSA.public_key(), kid="rsa", alg="RS256"),
            jwk(jwt.algorithms.ECAlgorithm, EC.public_key(), kid="ec", use="sig"),
            jwk(jwt.algorithms.OKPAlgorithm, ED.public_key(), kid="ed"),
        ]
    }
    keys = parse_jwks(document)
    assert [(key.kid, key.alg) for key in keys] == [("rsa", "RS256"), ("ec", None), ("ed", None)]


@pytest.mark.parametrize(
    "key,declared,alg,fits",
    [
        (ED.public_key(), None, "EdDSA", True),
        (ED.public_key(), None, "Ed25519", True),
        (ED.public_key(), None, "RS256", False),
        (RSA.public_key(), None, "EdDSA", False),
        (RSA.public_key(), "PS256", "RS256", False),
        (RSA.public_key(), "PS256", "PS256", True),
        (EC.public_key(), None, "ES256", True),
        (EC.public_key(), None, "ES384", False),
        (EC.public_key(), None, "HS256", False),
    ],
)
def test_key_type_rule_matches_the_algorithm(key: object, declared: str | None, alg: str, fits: bool) -> None:
    assert key_fits_algorithm(PublicKey(kid="k", alg=declared, key=key), alg) is fits


@pytest.mark.parametrize(
    "skipped",
    [
        "not a key",
        {"kty": "oct", "k": "c2VjcmV0"},
        {**jwk(jwt.algorithms.RSAAlgorithm, RSA.public_key()), "use": "enc"},
        jwk(jwt.algorithms.RSAAlgorithm, RSA),
        {"kty": "RSA", "n": "not base64!", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
    ],
    ids=["not_an_object", "symmetric", "encryption", "private", "unparseable_rsa", "point_not_on_curve"],
)
def test_a_skipped_key_does_not_hide_the_keys_after_it(skipped: object) -> None:
    usable = jwk(jwt.algorithms.ECAlgorithm, EC.public_key(), kid="after")
    assert [key.kid for key in parse_jwks({"keys": [skipped, usable]})] == ["after"]
