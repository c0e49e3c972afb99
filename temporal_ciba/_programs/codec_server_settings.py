"""The codec server's settings (`CIBA_CODEC_*`): where it listens, and how its callers authenticate.

    temporal-ciba codec-server

It decrypts history for whoever calls it, so loading refuses a configuration that lets anyone
call it: at least one way to authenticate must be set.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from temporal_ciba._settings import ENV_PREFIX, ConfigError, TemporalSettings, existing_file, split_list
from temporal_ciba.ciba import require_secure_url

CODEC_OPERATOR_TOKEN_MIN_LENGTH = 32
# Access tokens the codec server accepts from an OIDC issuer: RSA and EC signatures only.
CODEC_OIDC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


# RFC 9068 §2.1: a JWT access token's `typ` header.
ACCESS_TOKEN_TYPE = "at+jwt"


def normal_token_type(kind: str) -> str:
    """A JOSE `typ` value as compared: lowercase, without the "application/" prefix (RFC 7515 §4.1.9)."""
    return kind.lower().removeprefix("application/")


class CodecServerSettings(TemporalSettings):
    """The remote codec server for the Temporal UI and CLI.

    It decrypts history for whoever calls it, so every call must authenticate: an operator token
    (CLI `--codec-auth`) or an access token from an OIDC issuer (the UI's "pass access token");
    at least one must be configured."""

    codec_host: str = "127.0.0.1"
    codec_port: int = Field(default=8081, ge=0, le=65535)
    # The UI's origin(s), comma-separated: the browser calls the codec server from there.
    codec_cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:8233"]
    # Host names the server answers to (DNS rebinding); empty: localhost, 127.0.0.1, ::1 and CODEC_HOST.
    codec_allowed_hosts: Annotated[list[str], NoDecode] = []
    # Static bearer tokens for operators, comma-separated, each at least 32 characters.
    codec_operator_tokens: SecretStr | None = None
    # Bearer access tokens (JWT) from this issuer, for these audiences, are accepted too.
    codec_oidc_issuer: str | None = None
    codec_oidc_audience: Annotated[list[str], NoDecode] = []
    codec_oidc_algs: Annotated[list[str], NoDecode] = ["RS256", "PS256", "ES256"]
    # When set, the access token's `scope` (or `scp`) must include it.
    codec_oidc_required_scope: str | None = Field(default=None, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")
    # The JOSE `typ` header values accepted: RFC 9068 access tokens (at+jwt) by default, so an ID
    # token for the same audience is refused. Another type (Keycloak's JWT) needs a rule that ID
    # tokens fail: CODEC_OIDC_REQUIRED_SCOPE or CODEC_OIDC_TOKEN_CLAIM.
    codec_oidc_token_types: Annotated[list[str], NoDecode] = ["at+jwt"]
    # A claim the access token must hold, NAME=VALUE (Keycloak: typ=Bearer; its ID tokens say typ=ID).
    codec_oidc_token_claim: str | None = Field(default=None, pattern=r"^[\x21-\x3c\x3e-\x7e]+=[\x20-\x7e]+$")
    codec_oidc_http_timeout: float = Field(default=10.0, gt=0, le=30)
    codec_clock_leeway: int = Field(default=60, ge=0, le=600)
    # /encode makes ciphertext the worker will accept: off unless asked for.
    codec_allow_encode: bool = False
    codec_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Seconds for a request head to arrive (after the connection or the previous response), and
    # again for its body; slower clients are cut (408 for a late body).
    codec_read_timeout: float = Field(default=10.0, gt=0, le=300)
    # Open connections at most (idle and slow ones count); requests beyond get 503 at once.
    codec_max_connections: int = Field(default=256, ge=1, le=100_000)
    # HTTPS (the Temporal UI passes the access token only to an https codec endpoint).
    codec_tls_cert: Path | None = None
    codec_tls_key: Path | None = None

    @field_validator(
        "codec_cors_origins",
        "codec_allowed_hosts",
        "codec_oidc_audience",
        "codec_oidc_algs",
        "codec_oidc_token_types",
        mode="before",
    )
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("codec_cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        bad = [origin for origin in origins if origin == "*" or not origin.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"must list origins like https://ui.example.com, not {', '.join(bad)}")
        return [origin.rstrip("/") for origin in origins]

    @field_validator("codec_allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        bad = [host for host in hosts if not host or "*" in host or "/" in host]
        if bad:
            raise ValueError(f"must list host names, not {', '.join(bad)}")
        return [host.lower() for host in hosts]

    @field_validator("codec_operator_tokens")
    @classmethod
    def _tokens(cls, tokens: SecretStr | None) -> SecretStr | None:
        if tokens is None:
            return None
        values = split_list(tokens.get_secret_value())
        assert isinstance(values, list)
        if any(
            len(token) < CODEC_OPERATOR_TOKEN_MIN_LENGTH or not (token.isascii() and token.isprintable())
            for token in values
        ):
            raise ValueError(
                f"each token must be at least {CODEC_OPERATOR_TOKEN_MIN_LENGTH} printable ASCII characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        return tokens if values else None

    @field_validator("codec_oidc_issuer")
    @classmethod
    def _issuer(cls, issuer: str | None) -> str | None:
        return require_secure_url(issuer, "issuer") if issuer else None

    @field_validator("codec_oidc_algs")
    @classmethod
    def _algs(cls, algs: list[str]) -> list[str]:
        bad = [alg for alg in algs if alg not in CODEC_OIDC_ALGS]
        if bad or not algs:
            raise ValueError(f"must list RS*, PS* or ES* algorithms, got {', '.join(bad) or 'none'}")
        return algs

    @field_validator("codec_oidc_token_types")
    @classmethod
    def _token_types(cls, types: list[str]) -> list[str]:
        bad = [kind for kind in types if not kind.isascii() or not kind.isprintable()]
        if bad or not types:
            raise ValueError("must list JOSE typ values, like at+jwt")
        return [normal_token_type(kind) for kind in types]

    @field_validator("codec_tls_cert", "codec_tls_key")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return existing_file(path)

    @model_validator(mode="after")
    def _authenticated(self) -> CodecServerSettings:
        if self.codec_operator_tokens is None and self.codec_oidc_issuer is None:
            raise ConfigError(
                f"{ENV_PREFIX}CODEC_OPERATOR_TOKENS or {ENV_PREFIX}CODEC_OIDC_ISSUER is required: "
                "the codec server decrypts history and must authenticate its callers"
            )
        if self.codec_oidc_issuer is not None and not self.codec_oidc_audience:
            raise ConfigError(f"{ENV_PREFIX}CODEC_OIDC_AUDIENCE is required with {ENV_PREFIX}CODEC_OIDC_ISSUER")
        others = [kind for kind in self.codec_oidc_token_types if kind != ACCESS_TOKEN_TYPE]
        if others and self.codec_oidc_required_scope is None and self.codec_oidc_token_claim is None:
            raise ConfigError(
                f"{ENV_PREFIX}CODEC_OIDC_TOKEN_TYPES accepts {', '.join(others)}, which ID tokens carry too: "
                f"set {ENV_PREFIX}CODEC_OIDC_REQUIRED_SCOPE or {ENV_PREFIX}CODEC_OIDC_TOKEN_CLAIM as well"
            )
        if (self.codec_tls_cert is None) != (self.codec_tls_key is None):
            missing = "CODEC_TLS_KEY" if self.codec_tls_key is None else "CODEC_TLS_CERT"
            raise ConfigError(f"{ENV_PREFIX}{missing} is required with the other TLS setting")
        return self

    def operator_tokens(self) -> list[str]:
        if self.codec_operator_tokens is None:
            return []
        values = split_list(self.codec_operator_tokens.get_secret_value())
        assert isinstance(values, list)
        return values

    def token_claim(self) -> tuple[str, str] | None:
        """CODEC_OIDC_TOKEN_CLAIM as (name, value)."""
        if self.codec_oidc_token_claim is None:
            return None
        name, _, value = self.codec_oidc_token_claim.partition("=")
        return name, value

    def allowed_hosts(self) -> list[str]:
        """The Host names to answer; by default loopback names and the bind address (unless a wildcard)."""
        if self.codec_allowed_hosts:
            return self.codec_allowed_hosts
        hosts = ["localhost", "127.0.0.1", "::1"]
        bind = self.codec_host.strip("[]").lower()
        try:
            wildcard = ipaddress.ip_address(bind).is_unspecified
        except ValueError:
            wildcard = not bind
        if not wildcard and bind not in hosts:
            hosts.append(bind)
        return hosts
