"""The end-to-end tests' own fixtures: the OP as shipped, the test CA trusted, client certificates.

The fixtures they share with the security tests (the oidc-provider test OP, the payment API, the
callback, a Temporal dev server and the worker) come from tests.support.stack, a plugin of
tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from tests.support.mtls import issue_client_certificate, self_signed_client_certificate
from tests.support.op import TestOP, run_test_op
from tests.support.stack import AGENT_DNS_NAME, ClientCertificates, ClientKey, TlsFiles, op_config


@pytest.fixture(scope="session")
def plain_op(client_keys: dict[str, ClientKey]) -> Iterator[TestOP]:
    """The OP as oidc-provider ships it: no binding claims in the ID token."""
    with run_test_op(op_config(client_keys)) as running:
        yield running


@pytest.fixture(scope="module")
def trusted_test_ca(tls: TlsFiles) -> Iterator[None]:
    """The OP and the payment API serve certificates of the test CA.

    Trusted here as a user trusts a private CA (SSL_CERT_FILE, which httpx reads when it builds a
    TLS context)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(tls.ca))
        yield


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> ClientCertificates:
    directory = tmp_path_factory.mktemp("client-certificates")
    ca = trustme.CA()
    client_ca = directory / "client-ca.pem"
    ca.cert_pem.write_to_path(str(client_ca))
    return ClientCertificates(
        client_ca=client_ca,
        issued=issue_client_certificate(ca, directory, AGENT_DNS_NAME),
        self_signed=self_signed_client_certificate(directory, "self-signed-agent"),
        stranger=self_signed_client_certificate(directory, "stranger"),
    )
