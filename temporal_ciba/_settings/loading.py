"""Reading settings from `CIBA_*` environment variables, and the one-line error that names a bad one.

Every settings class derives from `_Settings` (prefix `CIBA_`, unknown variables ignored,
frozen), and every program loads its settings with `load_settings`, so a missing or malformed
variable stops any program the same way: ConfigError with one line naming it, and the CLI's
exit status 2.

A `CIBA_*` variable that no program reads but is close to one that does (`CIBA_DELIVERYMODE`)
is a likely misspelling: `load_settings` warns once per process, in one line naming it and the
closest known name. A warning, not an error: the prefix is shared with what deployments define
for themselves (docker-compose's `CIBA_BIND`, a project's own settings classes), and a program
cannot know every name another reads; an error would stop a correct deployment.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

ENV_PREFIX = "CIBA_"

logger = logging.getLogger("temporal_ciba.settings")

# Every CIBA_* variable the library's programs and the samples read, whether or not the program
# at hand has loaded the settings class that reads it (the worker does not load the codec
# server's): a valid name of another program is never reported as a misspelling.
# tests/unit/test_config_names.py checks it against every settings class.
KNOWN_NAMES = frozenset(
    {
        # OPSettings
        "CIBA_ISSUER", "CIBA_CLIENT_ID", "CIBA_CLIENT_SECRET", "CIBA_CLIENT_AUTH_METHOD",
        "CIBA_CLIENT_PRIVATE_KEY", "CIBA_CLIENT_SIGNING_ALG", "CIBA_CLIENT_KEY_ID", "CIBA_TLS_CLIENT_CERT",
        "CIBA_TLS_CLIENT_KEY", "CIBA_DELIVERY_MODE", "CIBA_ID_TOKEN_SIGNING_ALGS", "CIBA_TRUSTED_AUDIENCES",
        "CIBA_CLOCK_LEEWAY", "CIBA_ID_TOKEN_MAX_AGE", "CIBA_REQUIRE_AUTH_REQ_ID_CLAIM", "CIBA_HTTP_TIMEOUT",
        "CIBA_LOGIN_HINT_SUBJECTS", "CIBA_SIGN_AUTHENTICATION_REQUESTS", "CIBA_FAPI", "CIBA_DPOP",
        "CIBA_ID_TOKEN_DECRYPTION_KEY", "CIBA_OP_PROFILE", "CIBA_BINDING_MESSAGE_MAX_LENGTH",
        "CIBA_BINDING_MESSAGE_PATTERN", "CIBA_LOGIN_HINT_FORMAT", "CIBA_REQUIRED_PARAMETERS", "CIBA_AUDIENCE",
        "CIBA_RESOURCE", "CIBA_EXTRA_SCOPES_ALLOWED", "CIBA_AUTHORIZATION_DETAILS_ENRICHMENT",
        "CIBA_ACR_EQUIVALENTS",
        # shared: logging, Temporal, keys, records, worker tuning
        "CIBA_LOG_LEVEL", "CIBA_LOG_FORMAT", "CIBA_TASK_QUEUE", "CIBA_PAYLOAD_KEY", "CIBA_METRICS_BIND",
        "CIBA_TOKEN_KEY", "CIBA_RECORD_DB", "CIBA_RECORD_DSN", "CIBA_RECORD_KEY",
        "CIBA_WORKER_MAX_CONCURRENT_ACTIVITIES", "CIBA_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS",
        "CIBA_WORKER_MAX_CACHED_WORKFLOWS", "CIBA_POLICY_FILE",
        "CIBA_LOG_SIGNING_KEY",
        # the callback service
        "CIBA_CALLBACK_HOST", "CIBA_CALLBACK_PORT", "CIBA_CALLBACK_PATH", "CIBA_CALLBACK_TLS_CERT",
        "CIBA_CALLBACK_TLS_KEY", "CIBA_CALLBACK_INSECURE_HTTP", "CIBA_CALLBACK_MAX_BODY_BYTES",
        "CIBA_CALLBACK_READ_TIMEOUT", "CIBA_CALLBACK_MAX_CONNECTIONS",
        # the codec server
        "CIBA_CODEC_HOST", "CIBA_CODEC_PORT", "CIBA_CODEC_TLS_CERT", "CIBA_CODEC_TLS_KEY",
        "CIBA_CODEC_OPERATOR_TOKENS", "CIBA_CODEC_CORS_ORIGINS", "CIBA_CODEC_ALLOWED_HOSTS",
        "CIBA_CODEC_ALLOW_ENCODE", "CIBA_CODEC_MAX_BODY_BYTES", "CIBA_CODEC_OIDC_ISSUER",
        "CIBA_CODEC_OIDC_AUDIENCE", "CIBA_CODEC_OIDC_ALGS", "CIBA_CODEC_OIDC_REQUIRED_SCOPE",
        "CIBA_CODEC_OIDC_HTTP_TIMEOUT", "CIBA_CODEC_CLOCK_LEEWAY", "CIBA_CODEC_OIDC_TOKEN_TYPES",
        "CIBA_CODEC_OIDC_TOKEN_CLAIM", "CIBA_CODEC_READ_TIMEOUT", "CIBA_CODEC_MAX_CONNECTIONS",
        "CIBA_CODEC_PUBLIC_URL", "CIBA_CODEC_SIGNIN_CLIENT_ID", "CIBA_CODEC_SIGNIN_CLIENT_SECRET",
        "CIBA_CODEC_SIGNIN_SCOPE", "CIBA_CODEC_OPERATORS", "CIBA_CODEC_OPERATOR_CLAIM", "CIBA_CODEC_SESSION_SECONDS",
        "CIBA_CODEC_SESSION_KEY", "CIBA_CODEC_SESSION_SAME_SITE",
        # the samples' payment worker
        "CIBA_PAYMENT_API_URL",
    }
)  # fmt: skip
_reported: set[str] = set()


class ConfigError(Exception):
    """A missing or malformed setting; the message is one line naming the variable."""


class _Settings(BaseSettings):
    # Settings hold secrets (keys, client secrets, the record DSN): a validation error never quotes its input.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, hide_input_in_errors=True)


def _settings_names() -> set[str]:
    """The variables of every settings class defined in this process (a project's own too)."""
    names: set[str] = set()
    classes: list[type[BaseSettings]] = [_Settings]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        prefix = str(cls.model_config.get("env_prefix", ""))
        names.update(f"{prefix}{field}".upper() for field in cls.model_fields)
    return names


def misspelled_names(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, closest known name) for each CIBA_* variable no program reads but one is close to."""
    known = KNOWN_NAMES | _settings_names()
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.8)
        if close:
            found.append((name, close[0]))
    return found


def report_misspelled_names(environ: Mapping[str, str] | None = None) -> None:
    """Warn, once per name and process, of each CIBA_* variable that looks like a misspelled one."""
    for name, suggestion in misspelled_names(os.environ if environ is None else environ):
        if name not in _reported:
            _reported.add(name)
            logger.warning("%s is not a setting and is ignored: did you mean %s?", name, suggestion)


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
    """Read settings from the environment; ConfigError with one line naming each bad variable.

    Warns first of a CIBA_* variable that looks misspelled (report_misspelled_names)."""
    report_misspelled_names()
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
