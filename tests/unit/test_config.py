"""Configuration: a missing or malformed CIBA_* variable stops start-up with one line naming it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from temporal_ciba._cli.audit import AuditSettings
from temporal_ciba._settings import ConfigError, OPSettings, decode_payload_key, load_settings
from temporal_ciba.ciba import ClientSecretBasic, ClientSecretPost, PrivateKeyJwt
from temporal_ciba.ciba._binding import IDENTITY_SCOPES
from temporal_ciba.ciba._binding_message import BindingMessageRule
from temporal_ciba.ciba._dialect import RequestDialect

BASE = {"CIBA_ISSUER": "https://op.example.test", "CIBA_CLIENT_ID": "agent", "CIBA_CLIENT_SECRET": "s3cret"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("CIBA_"):
            monkeypatch.delenv(name)

    def set_env(**values: str | None) -> None:
        for name, value in {**BASE, **values}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_env


def error_line(env_values: dict[str, str | None], env) -> str:  # type: ignore[no-untyped-def]
    env(**env_values)
    with pytest.raises(ConfigError) as caught:
        load_settings(OPSettings)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("configuration error: ")
    assert "s3cret" not in message
    return message


def test_valid_settings(env) -> None:  # type: ignore[no-untyped-def]
    env(CIBA_ID_TOKEN_SIGNING_ALGS="ES256, PS256", CIBA_TRUSTED_AUDIENCES="https://api.example")
    settings = load_settings(OPSettings)
    assert settings.id_token_signing_algs == ["ES256", "PS256"]
    assert isinstance(settings.client_auth(), ClientSecretBasic)
    assert settings.validation_policy().trusted_audiences == frozenset({"https://api.example"})
    assert "s3cret" not in repr(settings)
    env(CIBA_CLIENT_AUTH_METHOD="client_secret_post")
    assert isinstance(load_settings(OPSettings).client_auth(), ClientSecretPost)


def test_require_auth_req_id_claim_setting_reaches_the_validation_policy(env) -> None:  # type: ignore[no-untyped-def]
    env()
    assert load_settings(OPSettings).validation_policy().require_auth_req_id_claim is False
    env(CIBA_REQUIRE_AUTH_REQ_ID_CLAIM="true")
    assert load_settings(OPSettings).validation_policy().require_auth_req_id_claim is True


@pytest.mark.parametrize(
    "values,named",
    [
        ({"CIBA_ISSUER": None}, "CIBA_ISSUER is required"),
        ({"CIBA_CLIENT_ID": None}, "CIBA_CLIENT_ID is required"),
        ({"CIBA_ISSUER": "http://op.example.test"}, "CIBA_ISSUER: issuer must be an https URL"),
        ({"CIBA_DELIVERY_MODE": "carrier-pigeon"}, "CIBA_DELIVERY_MODE"),
        ({"CIBA_CLIENT_AUTH_METHOD": "none"}, "CIBA_CLIENT_AUTH_METHOD"),
        ({"CIBA_CLIENT_SECRET": None}, "CIBA_CLIENT_SECRET is required for client_secret_basic"),
        ({"CIBA_CLIENT_AUTH_METHOD": "private_key_jwt"}, "CIBA_CLIENT_PRIVATE_KEY is required"),
        (
            {"CIBA_CLIENT_AUTH_METHOD": "private_key_jwt", "CIBA_CLIENT_PRIVATE_KEY": "/nonexistent.pem"},
            "CIBA_CLIENT_PRIVATE_KEY: no such file",
        ),
        ({"CIBA_ID_TOKEN_SIGNING_ALGS": "HS256"}, "CIBA_ID_TOKEN_SIGNING_ALGS"),
        ({"CIBA_HTTP_TIMEOUT": "soon"}, "CIBA_HTTP_TIMEOUT"),
    ],
    ids=[
        "missing_issuer",
        "missing_client_id",
        "http_issuer",
        "bad_mode",
        "bad_auth_method",
        "missing_secret",
        "missing_key",
        "key_file_missing",
        "hmac_alg",
        "bad_timeout",
    ],
)
def test_bad_setting_named(env, values: dict[str, str | None], named: str) -> None:  # type: ignore[no-untyped-def]
    assert named in error_line(values, env)


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8080", "http://localhost:3000/op", "http://[::1]:9000"])
def test_http_issuer_only_on_loopback(env, issuer: str) -> None:  # type: ignore[no-untyped-def]
    env(CIBA_ISSUER=issuer)
    assert load_settings(OPSettings).issuer == issuer


def test_private_key_jwt_settings(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = tmp_path / "client.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    env(CIBA_CLIENT_AUTH_METHOD="private_key_jwt", CIBA_CLIENT_PRIVATE_KEY=str(key), CIBA_CLIENT_SECRET=None)
    assert isinstance(load_settings(OPSettings).client_auth(), PrivateKeyJwt)
    env(CIBA_CLIENT_AUTH_METHOD="private_key_jwt", CIBA_CLIENT_PRIVATE_KEY=str(key), CIBA_CLIENT_SIGNING_ALG="PS256")
    with pytest.raises(ConfigError, match="CIBA_CLIENT_PRIVATE_KEY: algorithm PS256 does not fit"):
        load_settings(OPSettings)


def test_payload_key_encodings() -> None:
    raw = bytes(range(32))
    for text in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert decode_payload_key(text) == raw
    with pytest.raises(ValueError, match="32 bytes"):
        decode_payload_key(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        decode_payload_key("not base64 at all!")


KEY_A, KEY_B = (base64.b64encode(bytes([byte]) * 32).decode() for byte in (1, 2))


def test_a_json_setting_that_is_not_json_is_named(env) -> None:  # type: ignore[no-untyped-def]
    env(CIBA_LOGIN_HINT_SUBJECTS='{"alice": ')
    with pytest.raises(ConfigError) as caught:
        load_settings(OPSettings)
    assert str(caught.value) == "configuration error: CIBA_LOGIN_HINT_SUBJECTS: not valid JSON"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"CIBA_RECORD_KEY": "c2hvcnQ="}, "CIBA_RECORD_KEY: must decode to 32 bytes"),
        ({"CIBA_RECORD_KEY": f"{KEY_A},%%%%"}, "CIBA_RECORD_KEY: must be base64"),
        ({"CIBA_RECORD_DSN": "mysql://db/records"}, "CIBA_RECORD_DSN: must be a postgresql:// URL"),
    ],
    ids=["short_key", "bad_second_key", "not_postgres"],
)
def test_bad_record_setting_named(env, values: dict[str, str], named: str) -> None:  # type: ignore[no-untyped-def]
    env(**values)
    with pytest.raises(ConfigError) as caught:
        load_settings(AuditSettings)
    message = str(caught.value)
    assert "\n" not in message and named in message and "mysql://db" not in message


def test_record_keys_rotate_and_default_to_the_token_key(env) -> None:  # type: ignore[no-untyped-def]
    env(CIBA_RECORD_KEY=f"{KEY_B}, {KEY_A}")
    assert load_settings(AuditSettings).evidence_key_bytes() == [bytes([2]) * 32, bytes([1]) * 32]
    env(CIBA_RECORD_KEY=None, CIBA_TOKEN_KEY=KEY_A)
    (derived,) = load_settings(AuditSettings).evidence_key_bytes()
    assert derived != bytes([1]) * 32 and len(derived) == 32  # its own key, derived from the token key
    env(CIBA_RECORD_KEY=None, CIBA_TOKEN_KEY=None)
    with pytest.raises(ConfigError, match="CIBA_RECORD_KEY is required"):
        load_settings(AuditSettings).evidence_key_bytes()


# OP profiles and their rules, one by one ------------------------------------------------------


def test_generic_profile_is_todays_behaviour(env) -> None:  # type: ignore[no-untyped-def]
    env()
    settings = load_settings(OPSettings)
    assert settings.op_profile == "generic"
    assert settings.request_dialect() == RequestDialect()
    assert settings.request_dialect().binding_message == BindingMessageRule(max_length=128, pattern=None)
    policy = settings.validation_policy()
    assert policy.acr_equivalents == {} and policy.authorization_details_enrichment == {}
    assert policy.extra_scopes_allowed == IDENTITY_SCOPES


def test_a_profile_bundles_its_rules_and_settings_override_each(env) -> None:  # type: ignore[no-untyped-def]
    env(CIBA_OP_PROFILE="auth0", CIBA_AUDIENCE="https://api.example")
    dialect = load_settings(OPSettings).request_dialect()
    assert dialect.login_hint_format == "iss_sub" and dialect.binding_message.max_length == 64
    assert dialect.required_parameters == {"audience", "binding_message"}
    assert dialect.default_audience == "https://api.example"
    env(
        CIBA_OP_PROFILE="keycloak",
        CIBA_BINDING_MESSAGE_MAX_LENGTH="30",
        CIBA_LOGIN_HINT_FORMAT="iss_sub",
        CIBA_REQUIRED_PARAMETERS="resource",
        CIBA_RESOURCE="https://payments.example/ https://ledger.example/",
        CIBA_EXTRA_SCOPES_ALLOWED="",
        CIBA_AUTHORIZATION_DETAILS_ENRICHMENT='{"payment_initiation": ["consentId"]}',
        CIBA_ACR_EQUIVALENTS='{"urn:example:acr:mfa": ["gold", "2"]}',
    )
    settings = load_settings(OPSettings)
    dialect = settings.request_dialect()
    assert dialect.binding_message == BindingMessageRule(max_length=30, pattern=r"^[a-zA-Z0-9-._+/!?#]{1,50}$")
    assert (dialect.login_hint_format, dialect.required_parameters) == ("iss_sub", {"resource"})
    assert dialect.default_resource == ("https://payments.example/", "https://ledger.example/")
    policy = settings.validation_policy()
    assert policy.extra_scopes_allowed == frozenset()
    assert policy.authorization_details_enrichment == {"payment_initiation": frozenset({"consentId"})}
    assert policy.acr_equivalents == {"urn:example:acr:mfa": frozenset({"gold", "2"})}


@pytest.mark.parametrize(
    "values,named",
    [
        ({"CIBA_OP_PROFILE": "okta"}, "CIBA_OP_PROFILE"),
        ({"CIBA_OP_PROFILE": "auth0", "CIBA_DELIVERY_MODE": "ping"}, "CIBA_DELIVERY_MODE: the auth0 profile"),
        ({"CIBA_OP_PROFILE": "keycloak", "CIBA_DELIVERY_MODE": "push"}, "CIBA_DELIVERY_MODE: the keycloak profile"),
        ({"CIBA_BINDING_MESSAGE_MAX_LENGTH": "0"}, "CIBA_BINDING_MESSAGE_MAX_LENGTH"),
        ({"CIBA_BINDING_MESSAGE_MAX_LENGTH": "500"}, "CIBA_BINDING_MESSAGE_MAX_LENGTH"),
        ({"CIBA_BINDING_MESSAGE_PATTERN": "[a-"}, "CIBA_BINDING_MESSAGE_PATTERN: not a regular expression"),
        ({"CIBA_LOGIN_HINT_FORMAT": "email"}, "CIBA_LOGIN_HINT_FORMAT"),
        ({"CIBA_REQUIRED_PARAMETERS": "audience,password"}, "CIBA_REQUIRED_PARAMETERS"),
        ({"CIBA_RESOURCE": "payments"}, "CIBA_RESOURCE: resource must be an absolute URI"),
        ({"CIBA_AUTHORIZATION_DETAILS_ENRICHMENT": "{"}, "CIBA_AUTHORIZATION_DETAILS_ENRICHMENT: must be a JSON"),
        ({"CIBA_AUTHORIZATION_DETAILS_ENRICHMENT": '{"t": "x"}'}, "CIBA_AUTHORIZATION_DETAILS_ENRICHMENT"),
        ({"CIBA_ACR_EQUIVALENTS": "[]"}, "CIBA_ACR_EQUIVALENTS"),
        ({"CIBA_AUDIENCE": ""}, "CIBA_AUDIENCE"),
    ],
    ids=[
        "unknown_profile",
        "mode_the_profile_lacks",
        "push_on_keycloak",
        "zero_length",
        "length_over_our_ceiling",
        "pattern_not_a_regex",
        "unknown_hint_format",
        "unknown_required_parameter",
        "relative_resource",
        "enrichment_not_json",
        "enrichment_not_lists",
        "acr_map_not_an_object",
        "empty_audience",
    ],
)
def test_bad_profile_setting_named(env, values: dict[str, str], named: str) -> None:  # type: ignore[no-untyped-def]
    assert named in error_line(values, env)
