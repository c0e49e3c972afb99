"""The system the e2e and security tests run against, and its fixtures.

The oidc-provider test OP, the callback service, the example payment API, a Temporal dev server
and the worker, with the keys, clients and accounts they share; a plugin of tests/conftest.py, so
both levels have the fixtures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from temporalio.client import Client

from temporal_ciba._programs.connect import connect
from temporal_ciba._programs.worker import run_worker
from temporal_ciba._search_attributes import ensure_search_attributes
from temporal_ciba._settings import OPSettings, WorkerSettings
from temporal_ciba.records import open_store
from temporal_ciba_examples.payment_agent.plugin import PaymentAgentPlugin
from tests.support.mtls import ClientCertificateFiles
from tests.support.op import TEST_ROUTES, TestOP, ciba_client, run_test_op
from tests.support.records import assert_every_outcome_recorded
from tests.support.scratch import scratch_dir
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


def payment_api_client(**metadata: Any) -> dict[str, Any]:
    """The payment API's registration: a resource server that only introspects (and revokes) tokens."""
    return {
        "client_id": PAYMENT_API_CLIENT,
        "client_secret": SECRET,
        "grant_types": [],
        "response_types": [],
        "redirect_uris": [],
        **metadata,
    }


def introspect(op: TestOP, token: str) -> dict[str, Any]:
    """What the OP says of `token` to the payment API (RFC 7662), as the payment API asks it."""
    response = httpx.post(
        op.issuer + "/token/introspection", data={"token": token}, auth=(PAYMENT_API_CLIENT, SECRET), timeout=10
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


CODEC_SIGNIN_CLIENT = {
    "client_id": "codec-signin",
    "client_secret": SECRET,
    "application_type": "native",
    "grant_types": ["authorization_code"],
    "response_types": ["code"],
    "redirect_uris": ["http://127.0.0.1/callback"],
}


def op_config(
    client_keys: dict[str, ClientKey], *, ping_endpoint: str | None = None, **options: object
) -> dict[str, object]:
    clients = [
        ciba_client("poll-basic", client_secret=SECRET, token_endpoint_auth_method="client_secret_basic"),
        ciba_client("poll-post", client_secret=SECRET, token_endpoint_auth_method="client_secret_post"),
        ciba_client("poll-user-code", client_secret=SECRET, backchannel_user_code_parameter=True),
        # The payment API: a resource server that only introspects tokens.
        payment_api_client(),
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
    if ping_endpoint is not None:
        clients.append(
            ciba_client(
                PING_CLIENT, mode="ping", client_secret=SECRET, backchannel_client_notification_endpoint=ping_endpoint
            )
        )
    # The codec server's browser sign-in (authorization code with PKCE): a native client, so its
    # loopback redirect URI matches whatever port a test's codec server listens on (RFC 8252 §7.3).
    clients.append(CODEC_SIGNIN_CLIENT)
    # The OP's admin routes play the user's phone; the test-only routes hand out its tokens.
    return {"clients": clients, "accounts": ACCOUNTS, "ackInterval": 1, **TEST_ROUTES, **options}


@pytest.fixture(scope="session")
def op(client_keys: dict[str, ClientKey], callback: str, tls: TlsFiles) -> Iterator[TestOP]:
    """The OP with push-style binding claims in its ID tokens (auth_req_id, at_hash, rt_hash),
    and a ping client whose notification endpoint is our callback service (HTTPS, test CA)."""
    config = op_config(client_keys, ping_endpoint=callback, idTokenBindingClaims=True)
    with run_test_op(config, env={"NODE_EXTRA_CA_CERTS": str(tls.ca)}) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("op", "plain_op"):
        if name in request.fixturenames:
            request.getfixturevalue(name).set_faults()


# Temporal ------------------------------------------------------------------------------------

PAYLOAD_KEY = base64.b64encode(os.urandom(32)).decode()
TOKEN_KEY = base64.b64encode(os.urandom(32)).decode()
AGENT_CLIENT = "poll-basic"
PING_CLIENT = "ping-basic"


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A test CA and a certificate for 127.0.0.1 and localhost, made here (trustme)."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    issued.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return files


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path, *, verify: object = True) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def cli_command(*args: str) -> list[str]:
    """The installed console script, as a user runs it."""
    return [sys.executable, "-m", "temporal_ciba", *args]


def examples_command(*args: str) -> list[str]:
    """The samples' console script (temporal-ciba-examples), as a user runs it."""
    return [sys.executable, "-m", "temporal_ciba_examples", *args]


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


# Decision records of the workers the tests start (docs/operations/decision-records.md): never in the
# working directory.
RECORDS_DIR = scratch_dir("ciba-test-records-")


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without CIBA_* and TEMPORAL_* settings, plus `values` (and a
    decision-record file of the tests' own, unless `values` names one)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CIBA_", "TEMPORAL_"))}
    return {**env, "CIBA_RECORD_DB": str(RECORDS_DIR / "processes.sqlite3"), **values}


@contextmanager
def run_callback(server: DevServer, tls: TlsFiles, directory: Path, **env: str) -> Iterator[str]:
    """`temporal-ciba callback` over HTTPS as a separate process (more CIBA_* in `env`).

    Yields its notification URL."""
    port = free_port()
    log = directory / "callback.log"
    process_env = clean_env(
        TEMPORAL_ADDRESS=server.address,
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_CALLBACK_PORT=str(port),
        CIBA_CALLBACK_TLS_CERT=str(tls.cert),
        CIBA_CALLBACK_TLS_KEY=str(tls.key),
        **env,
    )
    process = subprocess.Popen(
        cli_command("callback"), env=process_env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        base = f"https://127.0.0.1:{port}"
        wait_until_serving(base + "/healthz", process, log, verify=ssl.create_default_context(cafile=str(tls.ca)))
        yield base + "/ciba/notify"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def callback(temporal_server: DevServer, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The callback service the tests' OP pings."""
    with run_callback(temporal_server, tls, tmp_path_factory.mktemp("callback")) as url:
        yield url


OPERATOR_TOKEN = "operator-" + base64.urlsafe_b64encode(os.urandom(24)).decode()


@contextmanager
def run_payment_api(op: TestOP, directory: Path, **env: str) -> Iterator[str]:
    """`temporal-ciba-examples payment-api` as a separate process, introspecting tokens at `op`; yields its URL."""
    port = free_port()
    environment = {
        **clean_env(),
        "PAYMENT_API_ISSUER": op.issuer,
        "PAYMENT_API_CLIENT_ID": PAYMENT_API_CLIENT,
        "PAYMENT_API_CLIENT_SECRET": SECRET,
        "PAYMENT_API_AGENT_CLIENT_IDS": f"{AGENT_CLIENT},{PING_CLIENT}",
        "PAYMENT_API_DB": str(directory / "payments.sqlite3"),
        "PAYMENT_API_PORT": str(port),
        "PAYMENT_API_OPERATOR_TOKEN": OPERATOR_TOKEN,
        **env,
    }
    log = directory / "payment-api.log"
    process = subprocess.Popen(
        examples_command("payment-api"), env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"{'https' if 'PAYMENT_API_TLS_CERT' in env else 'http'}://127.0.0.1:{port}"
    try:
        wait_until_serving(url + "/healthz", process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def payment_api(op: TestOP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example payment API, a real HTTP service introspecting tokens at the OP.

    The tests here pay the same INVOICE from many agents, each approved on its own, so this API
    pays once per grant but not once per action (tests/security checks that default too)."""
    directory = tmp_path_factory.mktemp("payment-api")
    with run_payment_api(op, directory, PAYMENT_API_ONE_PAYMENT_PER_ACTION="false") as url:
        yield url


def payments(payment_api: str, idempotency_key_prefix: str) -> list[dict[str, object]]:
    """The payments recorded under keys with this prefix, listed with the operator token."""
    response = httpx.get(payment_api + "/payments", headers={"authorization": f"Bearer {OPERATOR_TOKEN}"})
    response.raise_for_status()
    return [p for p in response.json() if str(p["idempotency_key"]).startswith(idempotency_key_prefix)]


def agent_settings(op: TestOP, **overrides: object) -> OPSettings:
    fields: dict[str, object] = {"issuer": op.issuer, "client_id": AGENT_CLIENT, "client_secret": SECRET, **overrides}
    return OPSettings(**fields)  # type: ignore[arg-type]


@asynccontextmanager
async def running_worker(
    server: DevServer,
    op_settings: OPSettings,
    payment_api: str,
    *,
    policy_file: Path | None = None,
    record_dsn: str | None = None,
) -> AsyncIterator[WorkerSettings]:
    """The real worker (run_worker) in this process, on a task queue of its own, with a
    decision-record store of its own (SQLite, or the PostgreSQL database `record_dsn`). When the
    test using it passes, every approval that ended on its task queue must have left exactly one
    record (tests.support.records)."""
    task_queue = f"ciba-test-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        task_queue=task_queue,
        payload_key=PAYLOAD_KEY,
        token_key=TOKEN_KEY,
        policy_file=policy_file,
        record_db=RECORDS_DIR / f"{task_queue}.sqlite3",
        record_dsn=record_dsn,
    )  # type: ignore[arg-type]
    stop = asyncio.Event()
    payments = PaymentAgentPlugin(
        api_url=payment_api,
        token_key=settings.token_key_bytes,
        dpop=op_settings.dpop,
        client_certificate=op_settings.client_certificate(),
    )
    running = asyncio.create_task(
        run_worker(op_settings, settings, plugins=[payments], stop=stop, target_host=server.address)
    )
    try:
        yield settings
        client = await connect(base64.b64decode(PAYLOAD_KEY), target_host=server.address)
        await assert_every_outcome_recorded(client, task_queue, open_store(path=settings.record_db, dsn=record_dsn))
    finally:
        stop.set()
        await running


@pytest.fixture
async def worker(temporal_server: DevServer, op: TestOP, payment_api: str) -> AsyncIterator[WorkerSettings]:
    """A poll-mode worker for the agent's client."""
    async with running_worker(temporal_server, agent_settings(op), payment_api) as settings:
        yield settings


@pytest.fixture
async def ping_worker(temporal_server: DevServer, op: TestOP, payment_api: str) -> AsyncIterator[WorkerSettings]:
    """A ping-mode worker: its requests carry notification tokens for the callback service."""
    op_settings = agent_settings(op, client_id=PING_CLIENT, delivery_mode="ping")
    async with running_worker(temporal_server, op_settings, payment_api) as settings:
        yield settings


# Mutual TLS (RFC 8705) -----------------------------------------------------------------------

AGENT_DNS_NAME = "ciba-agent.example.test"
MTLS_CLIENT_AUTH_METHODS = ["tls_client_auth", "self_signed_tls_client_auth"]
# oidc-provider's mTLS feature: certificate-bound access tokens and both client authentications.
MTLS_FEATURES = {
    "mTLS": {
        "enabled": True,
        "certificateBoundAccessTokens": True,
        "tlsClientAuth": True,
        "selfSignedTlsClientAuth": True,
    }
}


@dataclass(frozen=True)
class ClientCertificates:
    client_ca: Path  # the CA the OP and the payment API trust for tls_client_auth
    issued: ClientCertificateFiles  # from client_ca, for MTLS_CLIENT
    self_signed: ClientCertificateFiles  # registered by its JWK, for SELF_SIGNED_CLIENT
    stranger: ClientCertificateFiles  # self-signed, registered nowhere
