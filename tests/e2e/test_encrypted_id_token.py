"""Encrypted ID tokens end to end.

oidc-provider with features.encryption, a client registered for RSA-OAEP-256 / A256GCM ID tokens,
the real worker and approval workflow."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from temporalio.client import Client

from temporal_ciba._settings import OPSettings
from tests.support.flows import approve_one
from tests.support.op import TEST_ROUTES, TestOP, ciba_client, run_test_op
from tests.support.stack import ACCOUNTS, SECRET
from tests.support.temporal import DevServer

JWE_CLIENT = "jwe-agent"


@pytest.fixture(scope="module")
def decryption_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jwe") / "id-token-enc.pem"
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


@pytest.fixture(scope="module")
def jwe_op(decryption_key: Path) -> Iterator[TestOP]:
    public = RSAKey.import_key(decryption_key.read_text()).as_dict(private=False)
    agent = ciba_client(
        JWE_CLIENT,
        client_secret=SECRET,
        id_token_encrypted_response_alg="RSA-OAEP-256",
        id_token_encrypted_response_enc="A256GCM",
        jwks={"keys": [{**public, "use": "enc", "alg": "RSA-OAEP-256", "kid": "enc-1"}]},
    )
    config = {
        "clients": [agent],
        "accounts": ACCOUNTS,
        "ackInterval": 1,
        "providerOptions": {"features": {"encryption": {"enabled": True}}},
        **TEST_ROUTES,
    }
    with run_test_op(config) as running:
        yield running


async def test_encrypted_id_token_is_decrypted_then_validated(
    temporal_client: Client, temporal_server: DevServer, jwe_op: TestOP, decryption_key: Path
) -> None:
    settings = OPSettings(
        issuer=jwe_op.issuer, client_id=JWE_CLIENT, client_secret=SECRET, id_token_decryption_key=decryption_key
    )  # type: ignore[call-arg]
    auth_req_id, outcome = await approve_one(temporal_client, temporal_server, jwe_op, settings)
    assert outcome.status == "approved" and outcome.sub == "alice"
    # The OP did encrypt it: five parts, RSA-OAEP-256 around A256GCM.
    id_token = jwe_op.issued()[auth_req_id]["id_token"]
    assert id_token.count(".") == 4
    header = json.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "=="))
    assert (header["alg"], header["enc"]) == ("RSA-OAEP-256", "A256GCM")


async def test_encrypted_id_token_without_the_key_is_rejected(
    temporal_client: Client, temporal_server: DevServer, jwe_op: TestOP
) -> None:
    settings = OPSettings(issuer=jwe_op.issuer, client_id=JWE_CLIENT, client_secret=SECRET)  # type: ignore[call-arg]
    _, outcome = await approve_one(temporal_client, temporal_server, jwe_op, settings)
    assert outcome.status == "rejected" and outcome.error == "id_token_encrypted"
