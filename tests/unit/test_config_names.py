"""A misspelled `CIBA_*` variable is reported at start with the closest known name, once, as a warning."""

from __future__ import annotations

import logging

import pytest
from pydantic_settings import BaseSettings

from temporal_ciba._cli import audit
from temporal_ciba._programs import callback_settings, codec_server_settings
from temporal_ciba._settings import LoggingSettings, OPSettings, WorkerSettings, load_settings
from temporal_ciba._settings import loading as settings_loading
from temporal_ciba_examples.payment_agent import plugin as payment_plugin

EVERY_SETTINGS_CLASS: list[type[BaseSettings]] = [
    OPSettings,
    WorkerSettings,
    LoggingSettings,
    callback_settings.CallbackSettings,
    codec_server_settings.CodecServerSettings,
    audit.AuditSettings,
    payment_plugin.PaymentAgentSettings,
]


def test_every_variable_a_program_reads_is_known_to_every_program() -> None:
    """KNOWN_NAMES lists them all, so a worker never takes the codec server's setting for a typo."""
    read = {f"CIBA_{field}".upper() for cls in EVERY_SETTINGS_CLASS for field in cls.model_fields}
    assert read - settings_loading.KNOWN_NAMES == set()
    assert settings_loading.KNOWN_NAMES - read == set()  # nothing listed that no program reads


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("CIBA_DELIVERYMODE", "CIBA_DELIVERY_MODE"),
        ("CIBA_PAYLOAD_KYE", "CIBA_PAYLOAD_KEY"),
        ("ciba_issuer_", "CIBA_ISSUER"),
        ("CIBA_CALLBACK_TLS_CRT", "CIBA_CALLBACK_TLS_CERT"),
    ],
)
def test_a_misspelled_name_is_warned_of_once_with_the_closest_known_name(
    name: str, suggestion: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings_loading, "_reported", set())
    monkeypatch.setenv(name, "poll")
    with caplog.at_level(logging.WARNING, logger="temporal_ciba.settings"):
        load_settings(LoggingSettings)
        load_settings(LoggingSettings)  # a program loads several settings classes: said once
    assert [record.getMessage() for record in caplog.records] == [
        f"{name} is not a setting and is ignored: did you mean {suggestion}?"
    ]


def test_known_names_and_names_far_from_any_are_not_reported() -> None:
    environ = {
        "CIBA_DELIVERY_MODE": "poll",
        "CIBA_CODEC_PORT": "8081",
        "CIBA_PAYMENT_API_URL": "http://127.0.0.1:8700",
        # A deployment's own variables under the shared prefix (docker-compose's, a project's).
        "CIBA_BIND": "127.0.0.1",
        "CIBA_UI_CODEC_ENDPOINT": "http://localhost:8081",
        "PATH": "/usr/bin",
    }
    assert settings_loading.misspelled_names(environ) == []
