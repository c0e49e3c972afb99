"""The settings that the plugin, the worker and every program share.

Logging, the Temporal connection's payload key and task queue, the token key, and where
decision records are kept.

A program's own settings (the callback service's, the codec server's, the audit command's) live
beside that program and derive from these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from temporal_ciba._settings.loading import (
    ENV_PREFIX,
    ConfigError,
    _Settings,
    decode_payload_key,
    existing_file,
    split_list,
)
from temporal_ciba.crypto import derive_key


class LoggingSettings(_Settings):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class TemporalSettings(_Settings):
    """What every program that talks to Temporal needs; the connection itself is temporalio.envconfig."""

    task_queue: str = Field(default="ciba-approvals", min_length=1)
    payload_key: SecretStr
    # HOST:PORT where the Temporal SDK's metrics are served for Prometheus; off when unset.
    metrics_bind: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+:[0-9]{1,5}$")

    @field_validator("payload_key")
    @classmethod
    def _key(cls, key: SecretStr) -> SecretStr:
        decode_payload_key(key.get_secret_value())
        return key

    @property
    def payload_key_bytes(self) -> bytes:
        return decode_payload_key(self.payload_key.get_secret_value())


class TokenKeySettings(TemporalSettings):
    """The settings of programs that open tokens, with a key of their own.

    The worker opens sealed tokens and the callback service notification tokens. CIBA_TOKEN_KEY
    is a key of its own, so operators who hold only the payload key (to read history through the
    codec server) can neither open a token nor forge a notification."""

    token_key: SecretStr

    @field_validator("token_key")
    @classmethod
    def _token_key(cls, key: SecretStr) -> SecretStr:
        decode_payload_key(key.get_secret_value())
        return key

    @model_validator(mode="after")
    def _distinct(self) -> TokenKeySettings:
        if self.token_key_bytes == self.payload_key_bytes:
            raise ConfigError(f"{ENV_PREFIX}TOKEN_KEY must differ from {ENV_PREFIX}PAYLOAD_KEY")
        return self

    @property
    def token_key_bytes(self) -> bytes:
        return decode_payload_key(self.token_key.get_secret_value())


def check_dsn(dsn: str) -> None:
    """ValueError, saying what is wrong without quoting `dsn`, unless libpq can parse it.

    Settings call it at start: a connection string libpq cannot parse would otherwise fail every
    write, and libpq's message quotes the offending token (the password, often)."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ValueError("needs psycopg: install temporal-ciba[postgres]") from None
    try:
        conninfo_to_dict(dsn)
    except Exception:
        raise ValueError(
            "libpq cannot parse this URL (a reserved character such as % @ : / in the user name or "
            "password must be percent-encoded, % as %25)"
        ) from None


class RecordSettings(_Settings):
    """Where decision records are kept (temporal_ciba.records) and the key of their evidence."""

    # SQLite file, used unless RECORD_DSN is set.
    record_db: Path = Path("ciba-records.sqlite3")
    # PostgreSQL instead (postgresql://user:password@host/db; needs the `postgres` extra).
    record_dsn: SecretStr | None = None
    # Base64 keys, comma-separated: the first encrypts the evidence, each decrypts (rotation).
    # Unset: derived from CIBA_TOKEN_KEY (README, "Decision records").
    record_key: Annotated[list[SecretStr], NoDecode] = []
    # Base64 Ed25519 seed (32 bytes) that signs the decision log's checkpoints. Unset: derived
    # from CIBA_TOKEN_KEY (docs/operations/decision-records.md, "The log").
    log_signing_key: SecretStr | None = None

    @field_validator("log_signing_key")
    @classmethod
    def _log_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            decode_payload_key(key.get_secret_value())
        return key

    def log_key_bytes(self, token_key: bytes | None) -> bytes:
        """The log signing key's seed, or the one derived from the token key when none is set."""
        if self.log_signing_key is not None:
            return decode_payload_key(self.log_signing_key.get_secret_value())
        if token_key is None:
            raise ConfigError(f"{ENV_PREFIX}LOG_SIGNING_KEY is required (or {ENV_PREFIX}TOKEN_KEY, its default)")
        return derive_key(token_key, "decision log signing key v1")

    @field_validator("record_key", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return split_list(value)

    @field_validator("record_key")
    @classmethod
    def _keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            decode_payload_key(key.get_secret_value())
        return keys

    @field_validator("record_dsn")
    @classmethod
    def _dsn(cls, dsn: SecretStr | None) -> SecretStr | None:
        if dsn is not None:
            check_dsn(dsn.get_secret_value())
        return dsn

    def record_key_bytes(self, token_key: bytes | None) -> list[bytes]:
        """The record keys, or the one derived from the token key when none is set."""
        if self.record_key:
            return [decode_payload_key(key.get_secret_value()) for key in self.record_key]
        if token_key is None:
            raise ConfigError(f"{ENV_PREFIX}RECORD_KEY is required (or {ENV_PREFIX}TOKEN_KEY, its default)")
        return [derive_key(token_key, "decision record key v1")]


class WorkerSettings(TokenKeySettings, RecordSettings):
    # Worker tuning, chosen from the benchmark (README): a pending approval wakes every poll, and
    # one evicted from the cache is rebuilt in the sandbox from its history; keeping 5,000 cached
    # cut the worker's CPU by a third at 2,000 pending, for about 0.13 MiB each.
    worker_max_concurrent_activities: int = Field(default=100, ge=1, le=10_000)
    worker_max_concurrent_workflow_tasks: int = Field(default=100, ge=2, le=10_000)
    worker_max_cached_workflows: int = Field(default=5000, ge=0, le=100_000)
    # The approval policy (TOML, temporal_ciba._policy) that require_approval(policy=WORKER_POLICY)
    # reads; the worker checks it at start and reads it again when it changes.
    policy_file: Path | None = None

    @field_validator("policy_file")
    @classmethod
    def _policy_file_exists(cls, path: Path | None) -> Path | None:
        return existing_file(path)
