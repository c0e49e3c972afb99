"""Client authentication (OIDC Core §9, RFC 6749 §2.3.1, RFC 7523 §3) and key loading."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from temporal_ciba.ciba import (
    CibaClient,
    ClientSecretBasic,
    ClientSecretPost,
    ClientSigningKey,
    PrivateKeyJwt,
    load_client_signing_key,
)
from temporal_ciba.ciba._client_auth import CLIENT_ASSERTION_TYPE
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA

NOW = 1_800_000_000.0
AUDIENCE = "https://op.example.test"


def test_basic_form_urlencodes_before_base64() -> None:
    headers: dict[str, str] = {}
    form: dict[str, str] = {}
    ClientSecretBasic("agent:1", "p@ss w/rd").apply(form, headers, audience=AUDIENCE, now=NOW)
    decoded = base64.b64decode(headers["authorization"].removeprefix("Basic ")).decode()
    assert decoded == "agent%3A1:p%40ss+w%2Frd" and form == {}


def test_post_puts_credentials_in_the_body() -> None:
    form: dict[str, str] = {}
    ClientSecretPost("agent", "s3cret").apply(form, {}, audience=AUDIENCE, now=NOW)
    assert form == {"client_id": "agent", "client_secret": "s3cret"}


def test_secrets_never_in_repr() -> None:
    assert "s3cret" not in repr(ClientSecretBasic("agent", "s3cret")) + repr(ClientSecretPost("agent", "s3cret"))


def _write_pem(path: Path, key: object) -> Path:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@pytest.mark.parametrize("kind,alg", [("ec", "ES256"), ("rsa", "PS256"), ("rsa", "RS256")])
@pytest.mark.parametrize("file_format", ["pem", "jwk"])
def test_private_key_jwt_assertion(tmp_path: Path, kind: str, alg: str, file_format: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    if file_format == "pem":
        path = _write_pem(tmp_path / "key.pem", key)
        signing_key = load_client_signing_key(path, alg=alg if kind == "rsa" else None, kid="k1")
    else:
        algorithm = jwt.algorithms.ECAlgorithm if kind == "ec" else jwt.algorithms.RSAAlgorithm
        jwk = {**json.loads(algorithm.to_jwk(key)), "kid": "k1", "alg": alg}  # type: ignore[attr-defined]
        path = tmp_path / "key.json"
        path.write_text(json.dumps(jwk))
        signing_key = load_client_signing_key(path)
    form: dict[str, str] = {}
    PrivateKeyJwt("agent", signing_key).apply(form, {}, audience=AUDIENCE, now=NOW)
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE and form["client_id"] == "agent"
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["alg"] == alg and header["kid"] == "k1"
    claims = jwt.decode(
        form["client_assertion"],
        key.public_key(),
        algorithms=[alg],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == "agent"
    assert claims["iat"] == int(NOW) and 0 < claims["exp"] - claims["iat"] <= 300
    assert len(claims["jti"]) >= 22


def test_rsa_key_prefers_what_the_op_accepts(tmp_path: Path) -> None:
    key = load_client_signing_key(_write_pem(tmp_path / "k.pem", rsa.generate_private_key(65537, 2048)))
    assert key.choose_algorithm(None) == "PS256"
    assert key.choose_algorithm(("RS256", "ES256")) == "RS256"
    with pytest.raises(ValueError, match="accepts none"):
        key.choose_algorithm(("ES256",))


def test_key_file_errors(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    public = tmp_path / "public.json"
    public.write_text(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    with pytest.raises(ValueError, match="public key"):
        load_client_signing_key(public)
    with pytest.raises(ValueError, match="does not fit"):
        load_client_signing_key(_write_pem(tmp_path / "k.pem", rsa_key), alg="ES256")
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"keys": [{}, {}]}))
    with pytest.raises(ValueError, match="exactly one"):
        load_client_signing_key(two)


def test_secret_clients_show_their_type_and_id() -> None:
    assert repr(ClientSecretBasic("agent", "s3cret")) == "ClientSecretBasic(client_id='agent')"
    assert repr(ClientSecretPost("agent", "s3cret")) == "ClientSecretPost(client_id='agent')"


def test_a_jwks_holding_one_key_and_a_jwk_after_blank_lines_load(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)), "kid": "from-the-set"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    loaded = load_client_signing_key(jwks)
    assert (loaded.algorithms, loaded.kid) == (("ES384",), "from-the-set")
    assert loaded.key.private_numbers() == key.private_numbers()
    padded = tmp_path / "padded.json"
    padded.write_text("\n  " + json.dumps(jwk) + "\n")
    assert load_client_signing_key(padded).kid == "from-the-set"


def test_the_assertion_is_signed_with_an_algorithm_the_op_accepts(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    client = PrivateKeyJwt("agent", load_client_signing_key(_write_pem(tmp_path / "k.pem", key)))
    form: dict[str, str] = {}
    client.apply(form, {}, audience=AUDIENCE, now=NOW, allowed_algs=("RS256", "ES256"))
    assert jwt.get_unverified_header(form["client_assertion"])["alg"] == "RS256"
    assertion = client.assertion(audience=AUDIENCE, now=NOW, allowed_algs=("RS256",))
    assert jwt.get_unverified_header(assertion)["alg"] == "RS256"
    with pytest.raises(ValueError, match="accepts none"):
        client.apply({}, {}, audience=AUDIENCE, now=NOW, allowed_algs=("ES256",))


def test_a_key_without_kid_puts_no_kid_in_the_header(tmp_path: Path) -> None:
    signing_key = load_client_signing_key(_write_pem(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1())))
    header = jwt.get_unverified_header(PrivateKeyJwt("agent", signing_key).assertion(audience=AUDIENCE, now=NOW))
    assert "kid" not in header and header["alg"] == "ES256"


def test_the_jti_is_24_random_bytes(tmp_path: Path) -> None:
    """RFC 7523 §3: a unique jti; 24 bytes (192 bits) from `secrets`, base64url without padding."""
    signing_key = load_client_signing_key(_write_pem(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1())))
    client = PrivateKeyJwt("agent", signing_key)
    jtis = {
        jwt.decode(client.assertion(audience=AUDIENCE, now=NOW), options={"verify_signature": False})["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20
    assert all(len(base64.urlsafe_b64decode(jti + "==")) == 24 and len(jti) == 32 for jti in jtis)


async def test_the_client_signs_its_assertion_for_the_op_with_an_algorithm_the_op_accepts() -> None:
    """Through CibaClient, the assertion's aud is the OP's issuer and the OP picks its algorithm.

    The OP's token_endpoint_auth_signing_alg_values_supported decides (RS256 here, though the key
    prefers PS256)."""
    key = rsa.generate_private_key(65537, 2048)
    document = {
        **METADATA,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
    }
    forms: list[dict[str, list[str]]] = []

    async def op(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=document)
        forms.append(parse_qs(request.content.decode()))
        return httpx.Response(400, json={"error": "authorization_pending"})

    auth = PrivateKeyJwt(CLIENT_ID, ClientSigningKey(key=key, algorithms=("PS256", "RS256")))
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    async with CibaClient(issuer=ISSUER, client_auth=auth, http=http, clock=lambda: NOW) as ciba:
        await ciba.request_token("req-1")
    (assertion,) = forms[0]["client_assertion"]
    assert jwt.get_unverified_header(assertion)["alg"] == "RS256"
    at_now = {"verify_exp": False, "verify_iat": False}  # NOW is a fixed time
    claims = jwt.decode(assertion, key.public_key(), algorithms=["RS256"], audience=ISSUER, options=at_now)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
