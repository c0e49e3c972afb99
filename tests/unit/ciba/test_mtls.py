"""Mutual TLS pieces (RFC 8705) without a network.

Client authentication by certificate, the certificate and its thumbprint, mtls_endpoint_aliases in
discovery, the settings that turn it on, and the payment API's reading of the presented certificate."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from temporal_ciba._settings import ConfigError, OPSettings, load_settings
from temporal_ciba.ciba import ClientCertificate, ClientSecretBasic, TlsClientAuth, certificate_thumbprint
from temporal_ciba.ciba._client import CibaClient
from temporal_ciba.ciba._discovery import parse_provider_metadata
from temporal_ciba.ciba._errors import DiscoveryError
from temporal_ciba_examples.payment_agent.payment_api import presented_certificate_thumbprint
from tests.support.mtls import self_signed_client_certificate

ISSUER = "https://op.example.test"


@pytest.mark.parametrize("method", ["tls_client_auth", "self_signed_tls_client_auth"])
def test_tls_client_auth_names_the_client_and_nothing_else(method: str) -> None:
    """RFC 8705 §2: client_id in the request; the certificate is the credential."""
    form: dict[str, object] = {"grant_type": "x"}
    headers: dict[str, str] = {}
    TlsClientAuth("agent", method).apply(form, headers, audience=ISSUER, now=0.0)
    assert form == {"grant_type": "x", "client_id": "agent"}
    assert headers == {}


def test_tls_client_auth_refuses_another_method() -> None:
    with pytest.raises(ValueError, match="not a mutual-TLS client authentication method"):
        TlsClientAuth("agent", "client_secret_basic")


def test_a_tls_method_without_a_certificate_is_refused() -> None:
    with pytest.raises(ValueError, match="tls_client_auth needs a client certificate"):
        CibaClient(issuer=ISSUER, client_auth=TlsClientAuth("agent"))


def test_thumbprint_is_base64url_sha256_of_the_der_certificate(tmp_path: Path) -> None:
    files = self_signed_client_certificate(tmp_path, "agent")
    expected = base64.urlsafe_b64encode(hashlib.sha256(files.der()).digest()).decode().rstrip("=")
    assert certificate_thumbprint(files.der()) == expected
    assert files.certificate.thumbprint == expected
    assert "=" not in expected and len(expected) == 43


def test_a_key_that_is_not_the_certificates_is_refused_at_start(tmp_path: Path) -> None:
    one = self_signed_client_certificate(tmp_path, "one")
    other = self_signed_client_certificate(tmp_path, "other")
    with pytest.raises(ValueError, match=r"cannot use .*one\.pem with .*other\.key: .*KEY_VALUES_MISMATCH"):
        ClientCertificate(one.cert, other.key)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    one = self_signed_client_certificate(tmp_path, "one")
    with pytest.raises(ValueError, match=r"cannot use .*missing\.pem with .*one\.key: .*No such file"):
        ClientCertificate(tmp_path / "missing.pem", one.key)


def test_the_ssl_context_presents_the_certificate(tmp_path: Path) -> None:
    files = self_signed_client_certificate(tmp_path, "agent")
    context = files.certificate.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname  # the OP is still verified


# Discovery: RFC 8705 §5 ----------------------------------------------------------------------


def metadata(**members: object) -> dict[str, object]:
    return {
        "issuer": ISSUER,
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "backchannel_authentication_endpoint": f"{ISSUER}/bc",
        "revocation_endpoint": f"{ISSUER}/revoke",
        **members,
    }


def test_aliases_replace_the_endpoints_for_a_client_using_mutual_tls() -> None:
    aliases = {
        "token_endpoint": "https://mtls.op.example.test/token",
        "backchannel_authentication_endpoint": "https://mtls.op.example.test/bc",
        "userinfo_endpoint": "https://mtls.op.example.test/userinfo",  # never called: dropped
    }
    parsed = parse_provider_metadata(metadata(mtls_endpoint_aliases=aliases), ISSUER)
    assert parsed.token_endpoint == f"{ISSUER}/token"  # without a certificate, as published
    mtls = parsed.for_mutual_tls()
    assert mtls.token_endpoint == "https://mtls.op.example.test/token"
    assert mtls.backchannel_authentication_endpoint == "https://mtls.op.example.test/bc"
    assert mtls.revocation_endpoint == f"{ISSUER}/revoke"  # no alias: the published one
    assert "userinfo_endpoint" not in parsed.mtls_endpoint_aliases


def test_without_aliases_the_endpoints_stay() -> None:
    parsed = parse_provider_metadata(metadata(), ISSUER)
    assert parsed.for_mutual_tls() == parsed


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ({"token_endpoint": "http://mtls.op.example.test/token"}, "mtls_endpoint_aliases.token_endpoint must be"),
        ({"token_endpoint": "https://mtls.op.example.test/token#x"}, "must not have a fragment"),
        ({"token_endpoint": 7}, "token_endpoint must be a URL"),
        (["https://mtls.op.example.test/token"], "must be a JSON object"),
    ],
)
def test_a_bad_alias_refuses_the_document(aliases: object, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        parse_provider_metadata(metadata(mtls_endpoint_aliases=aliases), ISSUER)


@pytest.mark.parametrize("with_certificate", [True, False])
async def test_the_client_calls_the_alias_only_when_it_presents_a_certificate(
    tmp_path: Path, with_certificate: bool
) -> None:
    """RFC 8705 §5: the aliases are for a client using mutual TLS; any other uses the endpoints."""
    aliases = {"token_endpoint": "https://mtls.op.example.test/token"}
    document = metadata(
        mtls_endpoint_aliases=aliases,
        backchannel_token_delivery_modes_supported=["poll"],
        token_endpoint_auth_methods_supported=["tls_client_auth", "client_secret_basic"],
    )
    called: list[str] = []

    async def op(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=document)
        called.append(str(request.url))
        return httpx.Response(400, json={"error": "authorization_pending"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    if with_certificate:
        certificate = self_signed_client_certificate(tmp_path, "agent").certificate
        ciba = CibaClient(issuer=ISSUER, client_auth=TlsClientAuth("agent"), http=http, client_certificate=certificate)
    else:
        ciba = CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic("agent", "s3cret"), http=http)
    async with ciba:
        await ciba.request_token("req-1")
    assert called == [aliases["token_endpoint"] if with_certificate else f"{ISSUER}/token"]


# Settings ------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CIBA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CIBA_ISSUER", ISSUER)
    monkeypatch.setenv("CIBA_CLIENT_ID", "agent")
    return monkeypatch


def config_error(env: pytest.MonkeyPatch, **values: str) -> str:
    for name, value in values.items():
        env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(OPSettings)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_tls_client_auth_needs_the_certificate(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, CIBA_CLIENT_AUTH_METHOD="tls_client_auth")
    assert "CIBA_TLS_CLIENT_CERT is required for tls_client_auth" in message


@pytest.mark.parametrize(("given", "missing"), [("CERT", "KEY"), ("KEY", "CERT")])
def test_the_certificate_and_its_key_come_together(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, given: str, missing: str
) -> None:
    files = self_signed_client_certificate(tmp_path, "agent")
    path = files.cert if given == "CERT" else files.key
    message = config_error(clean_env, CIBA_CLIENT_SECRET="s3cret", **{f"CIBA_TLS_CLIENT_{given}": str(path)})
    assert f"CIBA_TLS_CLIENT_{missing} is required with CIBA_TLS_CLIENT_{given}" in message


def test_a_certificate_with_the_wrong_key_stops_the_program(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    one = self_signed_client_certificate(tmp_path, "one")
    other = self_signed_client_certificate(tmp_path, "other")
    message = config_error(
        clean_env,
        CIBA_CLIENT_AUTH_METHOD="tls_client_auth",
        CIBA_TLS_CLIENT_CERT=str(one.cert),
        CIBA_TLS_CLIENT_KEY=str(other.key),
    )
    assert message.startswith("configuration error: CIBA_TLS_CLIENT_CERT: cannot use")


def test_a_certificate_binds_tokens_whatever_the_client_authentication(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """RFC 8705 §3 needs no tls_client_auth.

    A secret-authenticated client presenting a certificate gets certificate-bound tokens, and the OP
    is still asked through the aliases."""
    files = self_signed_client_certificate(tmp_path, "agent")
    clean_env.setenv("CIBA_CLIENT_SECRET", "s3cret")
    clean_env.setenv("CIBA_TLS_CLIENT_CERT", str(files.cert))
    clean_env.setenv("CIBA_TLS_CLIENT_KEY", str(files.key))
    client = load_settings(OPSettings).ciba_client()
    assert client.client_auth.method == "client_secret_basic"
    assert client.client_certificate == files.certificate


# The payment API -----------------------------------------------------------------------------


def request_with(extensions: dict[str, object] | None) -> Request:
    scope: dict[str, object] = {"type": "http", "method": "POST", "path": "/payments", "headers": []}
    if extensions is not None:
        scope["extensions"] = extensions
    return Request(scope)


def test_the_payment_api_reads_the_presented_certificate(tmp_path: Path) -> None:
    files = self_signed_client_certificate(tmp_path, "agent")
    pem = files.cert.read_text()
    request = request_with({"tls": {"client_cert_chain": [pem]}})
    assert presented_certificate_thumbprint(request) == files.certificate.thumbprint


@pytest.mark.parametrize("extensions", [None, {}, {"tls": {}}, {"tls": {"client_cert_chain": []}}])
def test_no_presented_certificate_is_none(extensions: dict[str, object] | None) -> None:
    assert presented_certificate_thumbprint(request_with(extensions)) is None
