"""FAPI-CIBA end to end.

oidc-provider over HTTPS with its FAPI 1.0 profile, signed CIBA requests and certificate-bound
access tokens (RFC 8705) on, a client registered for PS256 everywhere and private_key_jwt, the real
worker and workflow, and the payment API checking the binding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from temporal_ciba._settings import OPSettings
from temporal_ciba_examples.payment_agent.models import PaymentAgentResult, action_digest
from tests.support.flows import INVOICE, ROTATE_KEYS, approval_handle, pending_auth_req_id, start_agent, start_approval
from tests.support.mtls import ClientCertificateFiles
from tests.support.op import TEST_ROUTES, TestOP, ciba_client, run_test_op
from tests.support.stack import (
    ACCOUNTS,
    MTLS_FEATURES,
    ClientCertificates,
    ClientKey,
    TlsFiles,
    _public_jwk,
    payment_api_client,
    payments,
    run_payment_api,
    running_worker,
)
from tests.support.temporal import DevServer

FAPI_CLIENT = "fapi-agent"
FAPI_ALGS = ["PS256", "ES256"]
# oidc-provider's FAPI 1.0 Final profile and request objects, and only PS256/ES256 anywhere.
FAPI_PROVIDER_OPTIONS = {
    "features": {"fapi": {"enabled": True, "profile": "1.0 Final"}, "requestObjects": {"enabled": True}},
    "enabledJWA": {
        "requestObjectSigningAlgValues": FAPI_ALGS,
        "clientAuthSigningAlgValues": FAPI_ALGS,
        "idTokenSigningAlgValues": FAPI_ALGS,
    },
}


pytestmark = pytest.mark.usefixtures("trusted_test_ca")


@pytest.fixture(scope="module")
def fapi_op(client_keys: dict[str, ClientKey], tls: TlsFiles, certificates: ClientCertificates) -> Iterator[TestOP]:
    key = client_keys["PS256"]
    agent = ciba_client(
        FAPI_CLIENT,
        token_endpoint_auth_method="private_key_jwt",
        token_endpoint_auth_signing_alg="PS256",
        # The registration that makes oidc-provider refuse an unsigned request (CIBA §7.1.1).
        backchannel_authentication_request_signing_alg="PS256",
        id_token_signed_response_alg="PS256",
        jwks={"keys": [_public_jwk(key)]},
        # FAPI 1.0 Advanced §5.2.2-5: sender-constrained access tokens.
        tls_client_certificate_bound_access_tokens=True,
    )
    payment_api = payment_api_client(
        id_token_signed_response_alg="PS256"  # the OP refuses the RS256 default under these JWAs
    )
    config = {
        "clients": [agent, payment_api],
        "accounts": ACCOUNTS,
        "ackInterval": 1,
        "providerOptions": FAPI_PROVIDER_OPTIONS,
        "features": MTLS_FEATURES,
        "tls": {"cert": str(tls.cert), "key": str(tls.key), "clientCa": str(certificates.client_ca)},
        **TEST_ROUTES,
    }
    with run_test_op(config) as running:
        yield running


@pytest.fixture(scope="module")
def fapi_payment_api(
    trusted_test_ca: None,
    fapi_op: TestOP,
    tls: TlsFiles,
    certificates: ClientCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("fapi-payment-api")
    with run_payment_api(
        fapi_op,
        directory,
        PAYMENT_API_AGENT_CLIENT_IDS=FAPI_CLIENT,
        PAYMENT_API_TLS_CERT=str(tls.cert),
        PAYMENT_API_TLS_KEY=str(tls.key),
        PAYMENT_API_TLS_CLIENT_CA=str(certificates.client_ca),
    ) as url:
        yield url


def fapi_settings(op: TestOP, key: Path, certificate: ClientCertificateFiles, **overrides: object) -> OPSettings:
    fields: dict[str, object] = {
        "issuer": op.issuer,
        "client_id": FAPI_CLIENT,
        "client_auth_method": "private_key_jwt",
        "client_private_key": key,
        "tls_client_cert": certificate.cert,
        "tls_client_key": certificate.key,
        "fapi": True,
        **overrides,
    }
    return OPSettings(**fields)  # type: ignore[arg-type]


async def test_signed_request_with_fapi_on_is_approved_and_pays(
    temporal_client: Client,
    temporal_server: DevServer,
    fapi_op: TestOP,
    fapi_payment_api: str,
    client_keys: dict[str, ClientKey],
    certificates: ClientCertificates,
) -> None:
    settings = fapi_settings(fapi_op, client_keys["PS256"].path, certificates.issued)
    async with running_worker(temporal_server, settings, fapi_payment_api) as worker:
        agent = await start_agent(temporal_client, worker, expected_subject="alice")
        auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
        # The OP read every parameter from the signed request object.
        (seen,) = [r for r in fapi_op.requests() if r["auth_req_id"] == auth_req_id]
        assert seen["client_id"] == FAPI_CLIENT and seen["account"] == "alice"
        assert seen["binding_message"].startswith("Pay EUR 120.00 to IBAN DE02100100109307118603 of ACME GmbH")
        assert seen["authorization_details"][0]["creditorName"] == "ACME GmbH"
        fapi_op.approve(auth_req_id)
        result = await agent.result()
    assert isinstance(result, PaymentAgentResult)
    assert result.outcome.status == "approved" and result.outcome.sub == "alice"
    assert result.outcome.action_digest == action_digest(INVOICE)
    assert result.receipt is not None
    (paid,) = payments(fapi_payment_api, agent.id)
    assert paid["payment_id"] == result.receipt.payment_id


async def test_unsigned_request_refused_by_the_op_is_a_clear_error(
    temporal_client: Client,
    temporal_server: DevServer,
    fapi_op: TestOP,
    fapi_payment_api: str,
    client_keys: dict[str, ClientKey],
    certificates: ClientCertificates,
) -> None:
    settings = fapi_settings(fapi_op, client_keys["PS256"].path, certificates.issued, fapi=False)
    async with running_worker(temporal_server, settings, fapi_payment_api) as worker:
        handle = await start_approval(temporal_client, worker.task_queue, ROTATE_KEYS)
        outcome = await handle.result()
    assert outcome.status == "error" and outcome.error == "invalid_request"
    assert "Request Object must be used by this client" in (outcome.reason or "")
    assert outcome.auth_req_id is None
