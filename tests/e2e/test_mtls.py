"""Mutual TLS (RFC 8705) end to end.

oidc-provider over HTTPS with its mTLS feature on, clients registered for tls_client_auth (a
certificate from a test CA) and self_signed_tls_client_auth (a certificate known by its JWK),
certificate-bound access tokens, the real worker and workflow, and the payment API (HTTPS, asking
for client certificates) checking `cnf.x5t#S256` against the certificate each connection presents."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from temporal_ciba._models import ApprovalRequest, ApprovalWorkflowInput
from temporal_ciba._settings import OPSettings
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba_examples.payment_agent.models import (
    PaymentAction,
    PaymentAgentResult,
    action_digest,
    authorization_details,
)
from tests.support.flows import (
    INVOICE,
    ROTATE_KEYS,
    approval_handle,
    approve_one,
    pending_auth_req_id,
    start_agent,
    start_approval,
)
from tests.support.mtls import ClientCertificateFiles
from tests.support.op import TEST_ROUTES, TestOP, ciba_client, run_test_op
from tests.support.policy_examples import pay_by_policy
from tests.support.pydantic_ai_agent_flows import pay_with_the_example
from tests.support.stack import (
    ACCOUNTS,
    AGENT_DNS_NAME,
    MTLS_CLIENT_AUTH_METHODS,
    MTLS_FEATURES,
    ClientCertificates,
    TlsFiles,
    introspect,
    payment_api_client,
    payments,
    run_payment_api,
    running_worker,
)
from tests.support.temporal import DevServer

pytestmark = pytest.mark.usefixtures("trusted_test_ca")

MTLS_CLIENT = "mtls-agent"
SELF_SIGNED_CLIENT = "self-signed-agent"


def mtls_op_config(tls: TlsFiles, certificates: ClientCertificates, *, aliases: bool) -> dict[str, Any]:
    agent = ciba_client(
        MTLS_CLIENT,
        token_endpoint_auth_method="tls_client_auth",
        tls_client_auth_san_dns=AGENT_DNS_NAME,
        tls_client_certificate_bound_access_tokens=True,
    )
    self_signed = ciba_client(
        SELF_SIGNED_CLIENT,
        token_endpoint_auth_method="self_signed_tls_client_auth",
        jwks={"keys": [certificates.self_signed.public_jwk()]},
        tls_client_certificate_bound_access_tokens=True,
    )
    resource_server = payment_api_client()
    return {
        "clients": [agent, self_signed, resource_server],
        "accounts": ACCOUNTS,
        "ackInterval": 1,
        "tls": {"cert": str(tls.cert), "key": str(tls.key), "clientCa": str(certificates.client_ca)},
        "mtlsAliases": aliases,
        "features": MTLS_FEATURES,
        "providerOptions": {"clientAuthMethods": ["client_secret_basic", *MTLS_CLIENT_AUTH_METHODS]},
        **TEST_ROUTES,
    }


@pytest.fixture(scope="module")
def mtls_op(tls: TlsFiles, certificates: ClientCertificates) -> Iterator[TestOP]:
    """Every connection to the OP may present a certificate."""
    with run_test_op(mtls_op_config(tls, certificates, aliases=False)) as running:
        yield running


@pytest.fixture(scope="module")
def aliased_op(tls: TlsFiles, certificates: ClientCertificates) -> Iterator[TestOP]:
    """Only the endpoints named in mtls_endpoint_aliases (another port) ask for a certificate."""
    with run_test_op(mtls_op_config(tls, certificates, aliases=True)) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_payment_api(
    trusted_test_ca: None,
    mtls_op: TestOP,
    tls: TlsFiles,
    certificates: ClientCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("mtls-payment-api")
    # The certificates it asks clients for: the client CA's, and two self-signed ones by name
    # (the stranger's too, so that the token binding, not the handshake, is what refuses it).
    client_cas = directory / "client-cas.pem"
    client_cas.write_bytes(
        b"".join(
            path.read_bytes()
            for path in (certificates.client_ca, certificates.self_signed.cert, certificates.stranger.cert)
        )
    )
    with run_payment_api(
        mtls_op,
        directory,
        PAYMENT_API_AGENT_CLIENT_IDS=f"{MTLS_CLIENT},{SELF_SIGNED_CLIENT}",
        PAYMENT_API_TLS_CERT=str(tls.cert),
        PAYMENT_API_TLS_KEY=str(tls.key),
        PAYMENT_API_TLS_CLIENT_CA=str(client_cas),
    ) as url:
        yield url


def mtls_settings(op: TestOP, client_id: str, certificate: ClientCertificateFiles) -> OPSettings:
    return OPSettings(
        issuer=op.issuer,
        client_id=client_id,
        client_auth_method="tls_client_auth" if client_id == MTLS_CLIENT else "self_signed_tls_client_auth",
        tls_client_cert=certificate.cert,
        tls_client_key=certificate.key,
    )


def pay(api: str, action: PaymentAction, token: str, certificate: ClientCertificateFiles | None) -> httpx.Response:
    verify = certificate.certificate.ssl_context() if certificate is not None else True
    with httpx.Client(verify=verify, timeout=10) as http:
        return http.post(
            api + "/payments",
            json={**action.model_dump(), "action_digest": action_digest(action)},
            headers={"authorization": f"Bearer {token}", "idempotency-key": f"mtls-{uuid.uuid4().hex}"},
        )


@pytest.mark.parametrize("client_id", [MTLS_CLIENT, SELF_SIGNED_CLIENT])
async def test_certificate_bound_tokens_pay_through_the_agent(
    client_id: str,
    temporal_client: Client,
    temporal_server: DevServer,
    mtls_op: TestOP,
    mtls_payment_api: str,
    certificates: ClientCertificates,
) -> None:
    certificate = certificates.issued if client_id == MTLS_CLIENT else certificates.self_signed
    async with running_worker(temporal_server, mtls_settings(mtls_op, client_id, certificate), mtls_payment_api) as w:
        agent = await start_agent(temporal_client, w, expected_subject="alice")
        auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
        mtls_op.approve(auth_req_id)
        result = await agent.result()
    assert isinstance(result, PaymentAgentResult)
    assert result.outcome.status == "approved" and result.outcome.sub == "alice"
    assert result.receipt is not None and not result.receipt.duplicate
    (paid,) = payments(mtls_payment_api, agent.id)
    assert paid["payment_id"] == result.receipt.payment_id and paid["client_id"] == client_id
    # The OP authenticated the client by its certificate at both CIBA endpoints.
    (seen,) = [r for r in mtls_op.requests() if r["auth_req_id"] == auth_req_id]
    assert seen["client_id"] == client_id
    assert [r["status"] for r in mtls_op.token_requests(auth_req_id)][-1] == 200


async def test_a_bound_token_opens_the_api_only_over_its_certificate(
    temporal_client: Client,
    temporal_server: DevServer,
    mtls_op: TestOP,
    mtls_payment_api: str,
    certificates: ClientCertificates,
) -> None:
    # Not INVOICE: the API pays each action once per client, and the agent tests paid that one.
    action = INVOICE.model_copy(update={"reference": f"INV-{uuid.uuid4().hex[:8]}"})
    digest = action_digest(action)
    request = ApprovalRequest(
        login_hint="alice",
        binding_message="Pay EUR 120.00 to ACME GmbH",
        scope="openid payments",
        authorization_details=authorization_details(action, digest),
        action_digest=digest,
    )
    settings = mtls_settings(mtls_op, MTLS_CLIENT, certificates.issued)
    async with running_worker(temporal_server, settings, mtls_payment_api) as worker:
        handle = await temporal_client.start_workflow(
            CibaApprovalWorkflow.run,
            ApprovalWorkflowInput(request=request),
            id=f"approval-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
        )
        auth_req_id = await pending_auth_req_id(handle)
        mtls_op.approve(auth_req_id)
        outcome = await handle.result()
    assert outcome.status == "approved"
    access_token = mtls_op.issued()[auth_req_id]["access_token"]
    # RFC 8705 §3.1: the OP bound it to the certificate the worker presented.
    assert introspect(mtls_op, access_token)["cnf"] == {"x5t#S256": certificates.issued.certificate.thumbprint}
    for presented in (None, certificates.stranger):
        refused = pay(mtls_payment_api, action, access_token, presented)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "invalid_token"
        assert "client certificate" in refused.json()["error_description"]
    paid = pay(mtls_payment_api, action, access_token, certificates.issued)
    assert paid.status_code == 201, paid.text


async def test_endpoint_aliases_take_the_certificate_where_the_op_asks_for_it(
    temporal_client: Client,
    temporal_server: DevServer,
    aliased_op: TestOP,
    certificates: ClientCertificates,
) -> None:
    """tls_client_auth succeeds only at the OP's mTLS endpoint aliases (RFC 8705 §5).

    The issuer's own port asks for no certificate."""
    document = httpx.get(aliased_op.issuer + "/.well-known/openid-configuration", timeout=10).json()
    aliases = document["mtls_endpoint_aliases"]
    assert not aliases["token_endpoint"].startswith(aliased_op.issuer)
    settings = mtls_settings(aliased_op, MTLS_CLIENT, certificates.issued)
    auth_req_id, outcome = await approve_one(temporal_client, temporal_server, aliased_op, settings)
    assert outcome.status == "approved" and outcome.sub == "alice"
    access_token = aliased_op.issued()[auth_req_id]["access_token"]
    assert introspect(aliased_op, access_token)["cnf"] == {"x5t#S256": certificates.issued.certificate.thumbprint}


async def test_a_certificate_the_op_does_not_trust_is_a_clear_error(
    temporal_client: Client,
    temporal_server: DevServer,
    mtls_op: TestOP,
    certificates: ClientCertificates,
) -> None:
    settings = mtls_settings(mtls_op, MTLS_CLIENT, certificates.stranger)
    async with running_worker(temporal_server, settings, "http://127.0.0.1:9") as worker:
        handle = await start_approval(temporal_client, worker.task_queue, ROTATE_KEYS)
        outcome = await handle.result()
    assert outcome.status == "error" and outcome.error == "invalid_client"
    assert outcome.auth_req_id is None


def tls_client_auth(certificate: ClientCertificateFiles) -> dict[str, str]:
    return {
        "CIBA_CLIENT_ID": MTLS_CLIENT,
        "CIBA_CLIENT_SECRET": "",
        "CIBA_CLIENT_AUTH_METHOD": "tls_client_auth",
        "CIBA_TLS_CLIENT_CERT": str(certificate.cert),
        "CIBA_TLS_CLIENT_KEY": str(certificate.key),
    }


async def test_the_policy_example_pays_over_its_certificate(
    temporal_server: DevServer, mtls_op: TestOP, mtls_payment_api: str, certificates: ClientCertificates
) -> None:
    # pay_by_policy builds its own payment client: it presents the client certificate the token
    # is bound to, as the worker's PaymentAgentPlugin does (without it the API answers 401).
    settings = tls_client_auth(certificates.issued)
    paid = await pay_by_policy(
        "500.00", 1, server=temporal_server, op=mtls_op, payment_api=mtls_payment_api, **settings
    )
    [payment] = payments(mtls_payment_api, paid.workflow_id)
    assert payment["client_id"] == MTLS_CLIENT


async def test_the_pydantic_ai_example_pays_over_its_certificate(
    temporal_client: Client,
    temporal_server: DevServer,
    mtls_op: TestOP,
    mtls_payment_api: str,
    certificates: ClientCertificates,
    tmp_path: Path,
) -> None:
    settings = tls_client_auth(certificates.issued)
    log = tmp_path / "example.log"
    payment = await pay_with_the_example(temporal_client, temporal_server, mtls_op, mtls_payment_api, log, **settings)
    assert payment["client_id"] == MTLS_CLIENT
