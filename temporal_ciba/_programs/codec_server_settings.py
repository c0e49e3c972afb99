"""The codec server's settings (`CIBA_CODEC_*`): where it listens, and how its callers authenticate.

    temporal-ciba codec-server

It decrypts history for whoever calls it, so loading refuses a configuration that lets anyone
call it: at least one way to authenticate must be set.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

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


def session_key_bytes(key: SecretStr) -> bytes:
    """A session key: 32 bytes in base64 (standard or URL-safe, padding optional)."""
    text = key.get_secret_value().strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be 32 bytes in base64") from None
    if len(raw) != 32:
        raise ValueError("must be 32 bytes in base64")
    return raw


class CodecServerSettings(TemporalSettings):
    """The remote codec server for the Temporal UI and CLI.

    It decrypts history for whoever calls it, so every call must authenticate: an operator token
    (CLI `--codec-auth`), an access token from an OIDC issuer (the UI's "pass access token"), or
    the session cookie of an operator signed in through the browser (the UI's "include
    credentials"); at least one must be configured."""

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
    # Browser sign-in (OpenID Connect authorization code with PKCE at CODEC_OIDC_ISSUER): the
    # Temporal UI sends the session cookie it leaves, with "include credentials" on.
    # The codec server's URL as the browser reaches it; /callback under it is the redirect URI.
    codec_public_url: str | None = None
    codec_signin_client_id: str | None = Field(default=None, pattern=r"^[\x21-\x7e]{1,255}$")
    # None: a public client (PKCE only); else client_secret_basic.
    codec_signin_client_secret: SecretStr | None = None
    codec_signin_scope: str = Field(default="openid", pattern=r"^[\x21\x23-\x5b\x5d-\x7e ]+$")
    # Who may decode once signed in: these subjects, or whoever holds CODEC_OPERATOR_CLAIM.
    codec_operators: Annotated[list[str], NoDecode] = []
    # NAME=VALUE: the ID token's claim NAME equals VALUE or is a list holding it (groups=operators).
    codec_operator_claim: str | None = Field(default=None, pattern=r"^[\x21-\x3c\x3e-\x7e]+=[\x20-\x7e]+$")
    # How long a session lasts (seconds); the browser signs in again after.
    codec_session_seconds: int = Field(default=1800, ge=60, le=12 * 3600)
    # 32 bytes, base64: seals the session cookie. None: a key made at start (sessions end with the
    # process; replicas behind one name need the same key).
    codec_session_key: SecretStr | None = None
    # The session cookie's SameSite: lax suits a UI on the same site (same host name, another
    # port); none (HTTPS only) a UI on another site.
    codec_session_same_site: Literal["lax", "strict", "none"] = "lax"

    @field_validator(
        "codec_cors_origins",
        "codec_allowed_hosts",
        "codec_oidc_audience",
        "codec_oidc_algs",
        "codec_oidc_token_types",
        "codec_operators",
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

    @field_validator("codec_public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        url = require_secure_url(url.rstrip("/"), "URL")
        parts = urlsplit(url)
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must be a plain URL like https://codec.example.com")
        return url

    @field_validator("codec_operators")
    @classmethod
    def _operators(cls, operators: list[str]) -> list[str]:
        if any(not operator.isprintable() for operator in operators):
            raise ValueError("must list subjects (printable text)")
        return operators

    @field_validator("codec_session_key")
    @classmethod
    def _session_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            session_key_bytes(key)
        return key

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
        if self.codec_operator_tokens is None and self.codec_oidc_issuer is None and not self.signin:
            raise ConfigError(
                f"{ENV_PREFIX}CODEC_OPERATOR_TOKENS, {ENV_PREFIX}CODEC_OIDC_ISSUER or "
                f"{ENV_PREFIX}CODEC_SIGNIN_CLIENT_ID is required: "
                "the codec server decrypts history and must authenticate its callers"
            )
        self._check_signin()
        if self.codec_oidc_issuer is not None and not self.codec_oidc_audience and not self.signin:
            raise ConfigError(
                f"{ENV_PREFIX}CODEC_OIDC_AUDIENCE (bearer access tokens) or {ENV_PREFIX}CODEC_SIGNIN_CLIENT_ID "
                f"(browser sign-in) is required with {ENV_PREFIX}CODEC_OIDC_ISSUER"
            )
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

    def _check_signin(self) -> None:
        if not self.signin:
            return
        if self.codec_oidc_issuer is None:
            raise ConfigError(f"{ENV_PREFIX}CODEC_OIDC_ISSUER is required with {ENV_PREFIX}CODEC_SIGNIN_CLIENT_ID")
        if self.codec_public_url is None:
            raise ConfigError(
                f"{ENV_PREFIX}CODEC_PUBLIC_URL is required with {ENV_PREFIX}CODEC_SIGNIN_CLIENT_ID: the URL the "
                "browser reaches this server at (its /callback is the redirect URI registered at the OP)"
            )
        if not self.codec_operators and self.codec_operator_claim is None:
            raise ConfigError(
                f"{ENV_PREFIX}CODEC_OPERATORS or {ENV_PREFIX}CODEC_OPERATOR_CLAIM is required with "
                f"{ENV_PREFIX}CODEC_SIGNIN_CLIENT_ID: not everyone with an account at the OP may read history"
            )
        if self.codec_session_same_site == "none" and not self.codec_public_url.startswith("https://"):
            raise ConfigError(f"{ENV_PREFIX}CODEC_SESSION_SAME_SITE=none needs an https {ENV_PREFIX}CODEC_PUBLIC_URL")

    @property
    def signin(self) -> bool:
        """Whether browser sign-in is configured (CODEC_SIGNIN_CLIENT_ID)."""
        return self.codec_signin_client_id is not None

    def operator_claim(self) -> tuple[str, str] | None:
        """CODEC_OPERATOR_CLAIM as (name, value)."""
        if self.codec_operator_claim is None:
            return None
        name, _, value = self.codec_operator_claim.partition("=")
        return name, value

    def session_key_bytes(self) -> bytes | None:
        """CODEC_SESSION_KEY decoded, or None (a key is made at start)."""
        return None if self.codec_session_key is None else session_key_bytes(self.codec_session_key)

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
