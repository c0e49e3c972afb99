"""The real oidc-provider test OP, started once for the protocol tests."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from temporalio.client import Client

from temporal_ciba.config import OPSettings, WorkerSettings
from temporal_ciba.connect import connect
from temporal_ciba.registration import ensure_search_attributes
from temporal_ciba.run_worker import run_worker
from tests.support.op import TestOP, ciba_client, run_test_op
from tests.support.temporal import DevServer, free_port

SECRET = "a-client-secret-of-some-length-0123456789"
PAYMENT_API_CLIENT = "payment-api"
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
        # The payment API: a resource server that only introspects tokens.
        {
            "client_id": PAYMENT_API_CLIENT,
            "client_secret": SECRET,
            "grant_types": [],
            "response_types": [],
            "redirect_uris": [],
        },
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


# Temporal ------------------------------------------------------------------------------------

PAYLOAD_KEY = base64.b64encode(os.urandom(32)).decode()
AGENT_CLIENT = "poll-basic"


def cli_command(*args: str) -> list[str]:
    """The installed console script, as a user runs it."""
    return [sys.executable, "-m", "temporal_ciba.cli", *args]


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("temporal"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def temporal_client(temporal_server: DevServer) -> Client:
    client = await connect(base64.b64decode(PAYLOAD_KEY), target_host=temporal_server.address)
    await ensure_search_attributes(client)
    return client


@pytest.fixture(scope="session")
def payment_api(op: TestOP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example payment API, a real HTTP service introspecting tokens at the OP."""
    port = free_port()
    directory = tmp_path_factory.mktemp("payment-api")
    env = {
        **os.environ,
        "PAYMENT_API_ISSUER": op.issuer,
        "PAYMENT_API_CLIENT_ID": PAYMENT_API_CLIENT,
        "PAYMENT_API_CLIENT_SECRET": SECRET,
        "PAYMENT_API_AGENT_CLIENT_ID": AGENT_CLIENT,
        "PAYMENT_API_DB": str(directory / "payments.sqlite3"),
        "PAYMENT_API_PORT": str(port),
    }
    log = (directory / "payment-api.log").open("wb")
    process = subprocess.Popen(cli_command("payment-api"), env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the payment API did not start: {(directory / 'payment-api.log').read_text()}")
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def payments(payment_api: str, idempotency_key_prefix: str) -> list[dict[str, object]]:
    return [
        p
        for p in httpx.get(payment_api + "/payments").json()
        if str(p["idempotency_key"]).startswith(idempotency_key_prefix)
    ]


def agent_settings(op: TestOP, **overrides: object) -> OPSettings:
    fields: dict[str, object] = {"issuer": op.issuer, "client_id": AGENT_CLIENT, "client_secret": SECRET, **overrides}
    return OPSettings(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def worker(temporal_server: DevServer, op: TestOP, payment_api: str) -> AsyncIterator[WorkerSettings]:
    """The real worker (run_worker) in this process, on a task queue of this test's own."""
    settings = WorkerSettings(
        task_queue=f"ciba-test-{uuid.uuid4().hex[:8]}", payload_key=PAYLOAD_KEY, payment_api_url=payment_api
    )  # type: ignore[arg-type]
    stop = asyncio.Event()
    running = asyncio.create_task(
        run_worker(agent_settings(op), settings, stop=stop, target_host=temporal_server.address)
    )
    yield settings
    stop.set()
    await running
