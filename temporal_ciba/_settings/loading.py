"""Reading settings from `CIBA_*` environment variables, and the one-line error that names a bad one.

Every settings class derives from `_Settings` (prefix `CIBA_`, unknown variables ignored,
frozen), and every program loads its settings with `load_settings`, so a missing or malformed
variable stops any program the same way: ConfigError with one line naming it, and the CLI's
exit status 2.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

ENV_PREFIX = "CIBA_"


class ConfigError(Exception):
    """A missing or malformed setting; the message is one line naming the variable."""


class _Settings(BaseSettings):
    # Settings hold secrets (keys, client secrets, the record DSN): a validation error never quotes its input.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, hide_input_in_errors=True)


def existing_file(path: Path | None) -> Path | None:
    """The path, if it names a file: a validator, so a typo fails at start rather than at first use."""
    if path is not None and not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def split_list(value: object) -> object:
    """A list setting given as text: items separated by commas or whitespace."""
    if isinstance(value, str):
        return [item for item in value.replace(",", " ").split() if item]
    return value


def decode_payload_key(value: str) -> bytes:
    """32 bytes in base64, standard or URL-safe alphabet, padding optional."""
    text = value.strip()
    text += "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (standard or URL-safe)") from None
    if len(key) != 32:
        raise ValueError(f"must decode to 32 bytes, got {len(key)}")
    return key


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def env_name(settings_cls: type[BaseSettings], loc: tuple[object, ...]) -> str:
    """The environment variable behind a field (its location in a validation error)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    return f"{prefix}{loc[0]}".upper() if loc else settings_cls.__name__


def load_settings(settings_cls: type[SettingsT]) -> SettingsT:
    """Read settings from the environment; ConfigError with one line naming each bad variable."""
    try:
        return settings_cls()
    except ConfigError as exc:
        raise ConfigError(f"configuration error: {exc}") from None
    except SettingsError as exc:
        # pydantic-settings reads a JSON-valued setting (an object, a list) before validating it.
        field = re.search(r'field "([^"]+)"', str(exc))
        name = env_name(settings_cls, (field.group(1),) if field else ())
        raise ConfigError(f"configuration error: {name}: not valid JSON") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = env_name(settings_cls, tuple(error["loc"]))
            if error["type"] == "missing":
                problems.append(f"{name} is required")
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{name}: {message}")
        raise ConfigError("configuration error: " + "; ".join(problems)) from None
