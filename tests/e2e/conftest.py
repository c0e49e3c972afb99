"""The real oidc-provider test OP, started once for the protocol tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.op import TestOP, ciba_client, run_test_op

SECRET = "a-client-secret-of-some-length-0123456789"
ACCOUNTS = {
    "alice": {"email": "alice@example.com", "user_code": "4711"},
    "bob": {"email": "bob@example.com"},
}


@dataclass
class ClientKey:
    path: Path
    alg: str


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientKey]:
    """Private keys for the private_key_jwt clients: ES256 (JWK file), PS256 and RS256 (PEM files)."""
    directory = tmp_path_factory.mktemp("client-keys")
    keys: dict[str, ClientKey] = {}
    for alg in ("ES256", "PS256", "RS256"):
        key = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
        if alg == "ES256":
            path = directory / "es256.jwk.json"
            path.write_text(json.dumps({**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)), "kid": "es256-key"}))
        else:
            path = directory / f"{alg.lower()}.pem"
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        keys[alg] = ClientKey(path, alg)
    return keys


def _public_jwk(key_file: ClientKey) -> dict[str, object]:
    text = key_file.path.read_text()
    if text.startswith("{"):
        private = jwt.PyJWK(json.loads(text)).key
        kid = json.loads(text)["kid"]
    else:
        private = serialization.load_pem_private_key(text.encode(), password=None)
        kid = None
    algorithm = jwt.algorithms.ECAlgorithm if key_file.alg == "ES256" else jwt.algorithms.RSAAlgorithm
    jwk = json.loads(algorithm.to_jwk(private.public_key()))  # type: ignore[union-attr]
    return {**jwk, "alg": key_file.alg, **({"kid": kid} if kid else {})}


def op_config(client_keys: dict[str, ClientKey], **options: object) -> dict[str, object]:
    clients = [
        ciba_client("poll-basic", client_secret=SECRET, token_endpoint_auth_method="client_secret_basic"),
        ciba_client("poll-post", client_secret=SECRET, token_endpoint_auth_method="client_secret_post"),
        ciba_client("poll-user-code", client_secret=SECRET, backchannel_user_code_parameter=True),
    ]
    for alg, key_file in client_keys.items():
        clients.append(
            ciba_client(
                f"poll-jwt-{alg.lower()}",
                token_endpoint_auth_method="private_key_jwt",
                token_endpoint_auth_signing_alg=alg,
                jwks={"keys": [_public_jwk(key_file)]},
            )
        )
    return {"clients": clients, "accounts": ACCOUNTS, "ackInterval": 1, **options}


@pytest.fixture(scope="session")
def op(client_keys: dict[str, ClientKey]) -> Iterator[TestOP]:
    """The OP with push-style binding claims in its ID tokens (auth_req_id, at_hash, rt_hash)."""
    with run_test_op(op_config(client_keys, idTokenBindingClaims=True)) as running:
        yield running


@pytest.fixture(scope="session")
def plain_op(client_keys: dict[str, ClientKey]) -> Iterator[TestOP]:
    """The OP as oidc-provider ships it: no binding claims in the ID token."""
    with run_test_op(op_config(client_keys)) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("op", "plain_op"):
        if name in request.fixturenames:
            request.getfixturevalue(name).set_faults()
