"""The configuration reference (docs/operations/configuration.md) is the settings classes' own.

Every field of every settings class, the library's and the samples', has its environment
variable in the reference, and every variable the reference lists is a field of one."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from temporal_ciba import OPSettings, WorkerSettings
from temporal_ciba._programs.callback_settings import CallbackSettings
from temporal_ciba._programs.codec_server_settings import CodecServerSettings
from temporal_ciba._settings.shared import LoggingSettings
from temporal_ciba_examples.payment_agent.payment_api import PaymentApiSettings
from temporal_ciba_examples.payment_agent.plugin import PaymentAgentSettings

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "operations" / "configuration.md").read_text()
CLASSES: tuple[type[BaseSettings], ...] = (
    WorkerSettings,
    OPSettings,
    LoggingSettings,
    CallbackSettings,
    CodecServerSettings,
    PaymentAgentSettings,
    PaymentApiSettings,
)


def variables(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    found = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        found.add(alias or f"{prefix}{name}".upper())
    return found


def test_every_setting_is_in_the_reference() -> None:
    missing = sorted(name for cls in CLASSES for name in variables(cls) if f"`{name}`" not in REFERENCE)
    assert not missing, f"docs/operations/configuration.md does not document {missing}"


def test_every_variable_in_the_reference_is_a_setting() -> None:
    known = set().union(*(variables(cls) for cls in CLASSES))
    listed = set(re.findall(r"`((?:CIBA|PAYMENT_API)_[A-Z0-9_]+)`", REFERENCE))
    assert not listed - known, f"the reference lists variables no settings class reads: {sorted(listed - known)}"


def test_the_misspelling_warning_shown_is_the_one_programs_print() -> None:
    """The reference's example line is what load_settings logs for that name."""
    from temporal_ciba._settings.loading import misspelled_names

    shown = re.search(r"^(CIBA_\w+) is not a setting and is ignored: did you mean (CIBA_\w+)\?$", REFERENCE, re.M)
    assert shown is not None, "docs/operations/configuration.md shows no misspelling warning"
    assert misspelled_names({shown.group(1): "x"}) == [(shown.group(1), shown.group(2))]
    assert "A warning, not an error" in REFERENCE
