"""CIBA_FAPI and CIBA_SIGN_AUTHENTICATION_REQUESTS: what they require at start, and what they change."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from temporal_ciba._settings import ConfigError, OPSettings, load_settings
from tests.support.mtls import self_signed_client_certificate

SetEnv = Callable[..., None]


def pem(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture
def rsa_key(tmp_path: Path) -> Path:
    return pem(tmp_path / "rsa.pem", rsa.generate_private_key(65537, 2048))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, rsa_key: Path) -> Iterator[SetEnv]:
    """A FAPI client with private_key_jwt, an RSA key and DPoP; each test changes what it checks."""
    for name in list(os.environ):
        if name.startswith("CIBA_"):
            monkeypatch.delenv(name)
    base = {
        "CIBA_ISSUER": "https://op.example.test",
        "CIBA_CLIENT_ID": "agent",
        "CIBA_CLIENT_AUTH_METHOD": "private_key_jwt",
        "CIBA_CLIENT_PRIVATE_KEY": str(rsa_key),
        "CIBA_FAPI": "true",
        "CIBA_DPOP": "true",
    }

    def set_env(**values: str | None) -> None:
        for name, value in {**base, **values}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    set_env()
    yield set_env


def error_line(env: SetEnv, **values: str | None) -> str:
    env(**values)
    with pytest.raises(ConfigError) as caught:
        load_settings(OPSettings)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("configuration error: ")
    return message


def test_fapi_narrows_every_algorithm_to_ps256_and_es256(env: SetEnv) -> None:
    settings = load_settings(OPSettings)
    assert settings.signs_requests
    # An RSA key could sign RS256 too; FAPI 1.0 Advanced §8.6 allows PS256 only.
    assert settings.signing_key().algorithms == ("PS256",)
    assert settings.validation_policy().allowed_algs == ("PS256", "ES256")
    client = settings.ciba_client()
    assert client._sign_requests and client._request_signing_key is not None


def test_without_fapi_nothing_changes(env: SetEnv) -> None:
    env(CIBA_FAPI=None)
    settings = load_settings(OPSettings)
    assert not settings.signs_requests
    assert settings.signing_key().algorithms == ("PS256", "RS256")
    assert settings.validation_policy().allowed_algs == ("RS256", "PS256", "ES256")


def test_fapi_refuses_push_at_start(env: SetEnv) -> None:
    assert "CIBA_DELIVERY_MODE=push is refused with CIBA_FAPI" in error_line(env, CIBA_DELIVERY_MODE="push")


def test_fapi_requires_private_key_jwt(env: SetEnv) -> None:
    message = error_line(env, CIBA_CLIENT_AUTH_METHOD="client_secret_basic", CIBA_CLIENT_SECRET="s3cret-s3cret")
    assert (
        "CIBA_CLIENT_AUTH_METHOD must be private_key_jwt, tls_client_auth or self_signed_tls_client_auth with CIBA_FAPI"
        in message
    )


def test_fapi_requires_sender_constrained_tokens(env: SetEnv) -> None:
    message = error_line(env, CIBA_DPOP=None)
    assert "CIBA_FAPI needs sender-constrained access tokens: set CIBA_TLS_CLIENT_CERT" in message


@pytest.mark.parametrize("method", ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"])
def test_fapi_takes_certificate_bound_tokens(env: SetEnv, tmp_path: Path, method: str) -> None:
    files = self_signed_client_certificate(tmp_path, "agent")
    env(
        CIBA_DPOP=None,
        CIBA_CLIENT_AUTH_METHOD=method,
        CIBA_TLS_CLIENT_CERT=str(files.cert),
        CIBA_TLS_CLIENT_KEY=str(files.key),
    )
    settings = load_settings(OPSettings)
    client = settings.ciba_client()
    assert client.client_certificate == files.certificate
    assert client.client_auth.method == method
    assert client._sign_requests  # FAPI-CIBA signs requests whatever the client authentication


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"CIBA_CLIENT_SIGNING_ALG": "RS256"}, "CIBA_CLIENT_SIGNING_ALG must be PS256 or ES256"),
        ({"CIBA_ID_TOKEN_SIGNING_ALGS": "PS256,RS256"}, "CIBA_ID_TOKEN_SIGNING_ALGS may list only PS256 and ES256"),
    ],
)
def test_fapi_refuses_other_algorithms(env: SetEnv, values: dict[str, str], named: str) -> None:
    assert named in error_line(env, **values)


def test_fapi_refuses_a_key_without_a_fapi_algorithm(env: SetEnv, tmp_path: Path) -> None:
    p384 = pem(tmp_path / "p384.pem", ec.generate_private_key(ec.SECP384R1()))
    assert "not PS256 or ES256" in error_line(env, CIBA_CLIENT_PRIVATE_KEY=str(p384))


def test_signed_requests_need_the_private_key(env: SetEnv) -> None:
    message = error_line(
        env,
        CIBA_FAPI=None,
        CIBA_CLIENT_AUTH_METHOD="client_secret_basic",
        CIBA_CLIENT_SECRET="s3cret-s3cret",
        CIBA_CLIENT_PRIVATE_KEY=None,
        CIBA_SIGN_AUTHENTICATION_REQUESTS="true",
    )
    assert "CIBA_CLIENT_PRIVATE_KEY is required to sign authentication requests" in message


def test_signed_requests_check_the_private_key_at_start(env: SetEnv, tmp_path: Path) -> None:
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    message = error_line(
        env,
        CIBA_FAPI=None,
        CIBA_CLIENT_AUTH_METHOD="client_secret_basic",
        CIBA_CLIENT_SECRET="s3cret-s3cret",
        CIBA_CLIENT_PRIVATE_KEY=str(not_a_key),
        CIBA_SIGN_AUTHENTICATION_REQUESTS="true",
    )
    assert message.startswith("configuration error: CIBA_CLIENT_PRIVATE_KEY: ")
