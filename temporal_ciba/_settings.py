"""Configuration from `CIBA_*` environment variables (pydantic-settings).

Each program loads only what it needs (`load_settings(OPSettings)`); a missing or malformed variable
raises ConfigError with one line naming it, and the CLI exits with status 2.
The Temporal connection is not configured here: it uses temporalio.envconfig (TEMPORAL_*).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from temporal_ciba.ciba import (
    ASYMMETRIC_ALGS,
    BINDING_MESSAGE_MAX_LENGTH,
    PROFILES,
    TLS_CLIENT_AUTH_METHODS,
    BindingMessageRule,
    CibaClient,
    ClientAuth,
    ClientAuthMethod,
    ClientCertificate,
    ClientSecretBasic,
    ClientSecretPost,
    ClientSigningKey,
    DeliveryMode,
    LoginHintFormat,
    OPProfile,
    PrivateKeyJwt,
    ProfileName,
    RequestDialect,
    RequiredParameter,
    TlsClientAuth,
    ValidationPolicy,
    check_pattern,
    check_resource_indicators,
    load_client_signing_key,
    load_id_token_decryption_key,
    require_secure_url,
)
from temporal_ciba.crypto import derive_key

ENV_PREFIX = "CIBA_"
# FAPI 1.0 Advanced §8.6 (and FAPI-CIBA by reference): the only JWS algorithms allowed.
FAPI_ALGS = frozenset({"PS256", "ES256"})


class ConfigError(Exception):
    """A missing or malformed setting; the message is one line naming the variable."""


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)


def _existing_file(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [item for item in value.replace(",", " ").split() if item]
    return value


class OPSettings(_Settings):
    """The OpenID provider and this client's registration at it."""

    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_auth_method: ClientAuthMethod = "client_secret_basic"
    client_private_key: Path | None = None
    client_signing_alg: str | None = None
    client_key_id: str | None = None
    # RFC 8705: a client certificate and its key (PEM), presented on every call to the OP: for
    # tls_client_auth / self_signed_tls_client_auth, and so that the OP binds the access tokens
    # to it (cnf.x5t#S256); the worker presents it to the resource server too.
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    delivery_mode: DeliveryMode = "poll"
    id_token_signing_algs: Annotated[list[str], NoDecode] = ["RS256", "PS256", "ES256"]
    trusted_audiences: Annotated[list[str], NoDecode] = []
    clock_leeway: int = Field(default=60, ge=0, le=600)
    id_token_max_age: int = Field(default=600, gt=0)
    # For an OP that puts urn:openid:params:jwt:claim:auth_req_id in every CIBA ID token: then
    # an ID token without it is refused in poll and ping mode too (push always requires it).
    require_auth_req_id_claim: bool = False
    # At most 30 s: a token request attempt must end before the activity's 45 s timeout.
    http_timeout: float = Field(default=30.0, gt=0, le=30)
    # login_hint -> the OP's `sub` for that person (JSON object): an approval by anyone else is
    # rejected. Without an entry (or ApprovalRequest.expected_subject) the approver is not pinned.
    login_hint_subjects: dict[str, str] = {}
    # CIBA §7.1.1: send each authentication request as a JWT signed with CIBA_CLIENT_PRIVATE_KEY
    # (done anyway when the OP's discovery says require_signed_request_object).
    sign_authentication_requests: bool = False
    # FAPI-CIBA: signed requests, private_key_jwt, PS256/ES256 only, no push (see `_fapi`).
    fapi: bool = False
    # RFC 9449: sender-constrained tokens; each token request (and revocation) carries a DPoP proof.
    dpop: bool = False
    # OIDC Core §10.2: the private key (JWK or PEM, RSA or EC) that the OP encrypts ID tokens to;
    # when set, every ID token must be encrypted (RSA-OAEP-256 / A256GCM and the like).
    id_token_decryption_key: Path | None = None
    # The OP's dialect (temporal_ciba.ciba._profiles); each rule below, when set, overrides it.
    op_profile: ProfileName = "generic"
    binding_message_max_length: int | None = Field(default=None, ge=1, le=BINDING_MESSAGE_MAX_LENGTH)
    binding_message_pattern: str | None = None
    login_hint_format: LoginHintFormat | None = None
    required_parameters: Annotated[list[RequiredParameter] | None, NoDecode] = None
    # Sent with every request that names none: Auth0's audience, RFC 8707 resource indicators.
    audience: str | None = Field(default=None, min_length=1)
    resource: Annotated[list[str], NoDecode] = []
    # Scopes the OP may grant beyond those requested; empty: none.
    extra_scopes_allowed: Annotated[list[str] | None, NoDecode] = None
    # JSON: {authorization_details type: [members the OP may add]} (RFC 9396 §6.1).
    authorization_details_enrichment: Annotated[dict[str, list[str]], NoDecode] = {}
    # JSON: {requested acr: [values the OP answers that are at least as strong]}.
    acr_equivalents: Annotated[dict[str, list[str]] | None, NoDecode] = None

    @field_validator("required_parameters", "resource", "extra_scopes_allowed", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _csv(value)

    @field_validator("authorization_details_enrichment", "acr_equivalents", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON object of lists of strings") from None
        return value

    @field_validator("binding_message_pattern")
    @classmethod
    def _pattern(cls, pattern: str | None) -> str | None:
        return check_pattern(pattern)

    @field_validator("resource")
    @classmethod
    def _resources(cls, resources: list[str]) -> list[str]:
        return list(check_resource_indicators(tuple(resources)))

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, issuer: str) -> str:
        return require_secure_url(issuer, "issuer")

    @field_validator("id_token_signing_algs", "trusted_audiences", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _csv(value)

    @field_validator("id_token_signing_algs")
    @classmethod
    def _asymmetric(cls, algs: list[str]) -> list[str]:
        bad = [alg for alg in algs if alg not in ASYMMETRIC_ALGS]
        if bad or not algs:
            raise ValueError(
                f"must list asymmetric JWS algorithms ({', '.join(sorted(ASYMMETRIC_ALGS))}), got {bad or 'none'}"
            )
        return algs

    @field_validator("client_private_key", "tls_client_cert", "tls_client_key")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return _existing_file(path)

    @field_validator("id_token_decryption_key")
    @classmethod
    def _decryption_key(cls, path: Path | None) -> Path | None:
        if _existing_file(path) is not None:
            assert path is not None
            load_id_token_decryption_key(path)
        return path

    @model_validator(mode="after")
    def _client_certificate(self) -> OPSettings:
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            given, missing = ("CERT", "KEY") if self.tls_client_key is None else ("KEY", "CERT")
            raise ConfigError(f"{ENV_PREFIX}TLS_CLIENT_{missing} is required with {ENV_PREFIX}TLS_CLIENT_{given}")
        if self.tls_client_cert is not None:
            try:
                self.client_certificate()
            except ValueError as exc:
                raise ConfigError(f"{ENV_PREFIX}TLS_CLIENT_CERT: {exc}") from None
        return self

    @model_validator(mode="after")
    def _credentials(self) -> OPSettings:
        if self.client_auth_method == "private_key_jwt":
            if self.client_private_key is None:
                raise ConfigError(f"{ENV_PREFIX}CLIENT_PRIVATE_KEY is required for private_key_jwt")
        elif self.client_auth_method in TLS_CLIENT_AUTH_METHODS:
            if self.tls_client_cert is None:
                raise ConfigError(f"{ENV_PREFIX}TLS_CLIENT_CERT is required for {self.client_auth_method}")
        elif self.client_secret is None or not self.client_secret.get_secret_value():
            raise ConfigError(f"{ENV_PREFIX}CLIENT_SECRET is required for {self.client_auth_method}")
        if self.signs_requests and self.client_private_key is None:
            raise ConfigError(f"{ENV_PREFIX}CLIENT_PRIVATE_KEY is required to sign authentication requests")
        if self.client_private_key is not None and (
            self.client_auth_method == "private_key_jwt" or self.signs_requests
        ):
            try:
                load_client_signing_key(self.client_private_key, alg=self.client_signing_alg)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{ENV_PREFIX}CLIENT_PRIVATE_KEY: {exc}") from None
        if self.delivery_mode not in self.profile.delivery_modes:
            raise ConfigError(
                f"{ENV_PREFIX}DELIVERY_MODE: the {self.op_profile} profile's OP does not offer {self.delivery_mode} "
                f"(offers {', '.join(self.profile.delivery_modes)})"
            )
        return self

    @model_validator(mode="after")
    def _fapi(self) -> OPSettings:
        """FAPI-CIBA §5.2.2 and FAPI 1.0 Advanced §5.2.2 (which it builds on), client side."""
        if not self.fapi_mode:
            return self
        name = f"{ENV_PREFIX}FAPI" if self.fapi else f"{ENV_PREFIX}OP_PROFILE=fapi-ciba"
        if self.delivery_mode == "push":
            raise ConfigError(f"{ENV_PREFIX}DELIVERY_MODE=push is refused with {name} (FAPI-CIBA §5.2.2: poll or ping)")
        if self.client_auth_method not in ("private_key_jwt", *TLS_CLIENT_AUTH_METHODS):
            raise ConfigError(
                f"{ENV_PREFIX}CLIENT_AUTH_METHOD must be private_key_jwt, tls_client_auth or "
                f"self_signed_tls_client_auth with {name} (FAPI 1.0 Advanced §5.2.2-14)"
            )
        if self.tls_client_cert is None and not self.dpop:
            raise ConfigError(
                f"{name} needs sender-constrained access tokens: set {ENV_PREFIX}TLS_CLIENT_CERT (RFC 8705) "
                f"or {ENV_PREFIX}DPOP=true (RFC 9449) (FAPI 1.0 Advanced §5.2.2-5, FAPI 2.0 §5.3.2.2)"
            )
        if self.client_signing_alg is not None and self.client_signing_alg not in FAPI_ALGS:
            raise ConfigError(f"{ENV_PREFIX}CLIENT_SIGNING_ALG must be PS256 or ES256 with {name}")
        if "id_token_signing_algs" in self.model_fields_set and set(self.id_token_signing_algs) - FAPI_ALGS:
            raise ConfigError(f"{ENV_PREFIX}ID_TOKEN_SIGNING_ALGS may list only PS256 and ES256 with {name}")
        try:
            self.signing_key()
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}CLIENT_PRIVATE_KEY: {exc} with {name}") from None
        return self

    @property
    def fapi_mode(self) -> bool:
        """CIBA_FAPI, or the fapi-ciba profile: the same rules."""
        return self.fapi or self.op_profile == "fapi-ciba"

    @property
    def signs_requests(self) -> bool:
        # FAPI-CIBA §5.2.2: the authorization server shall require signed authentication requests.
        return self.sign_authentication_requests or self.fapi_mode

    def signing_key(self) -> ClientSigningKey:
        """The client's private key (private_key_jwt, signed requests); PS256/ES256 only under FAPI."""
        assert self.client_private_key is not None
        key = load_client_signing_key(self.client_private_key, alg=self.client_signing_alg, kid=self.client_key_id)
        if not self.fapi_mode:
            return key
        # FAPI 1.0 Advanced §8.6: PS256 or ES256, nothing else (an RSA key would offer RS256 too).
        algorithms = tuple(alg for alg in key.algorithms if alg in FAPI_ALGS)
        if not algorithms:
            raise ValueError(f"its algorithms {', '.join(key.algorithms)} are not PS256 or ES256")
        return ClientSigningKey(key=key.key, algorithms=algorithms, kid=key.kid)

    @property
    def profile(self) -> OPProfile:
        return PROFILES[self.op_profile]

    def request_dialect(self) -> RequestDialect:
        """The profile's request rules, with each one set in the environment instead."""
        dialect = self.profile.request
        rule = dialect.binding_message
        return RequestDialect(
            binding_message=BindingMessageRule(
                max_length=self.binding_message_max_length or rule.max_length,
                pattern=self.binding_message_pattern if self.binding_message_pattern is not None else rule.pattern,
            ),
            login_hint_format=self.login_hint_format or dialect.login_hint_format,
            required_parameters=(
                frozenset(self.required_parameters)
                if self.required_parameters is not None
                else dialect.required_parameters
            ),
            default_audience=self.audience,
            default_resource=tuple(self.resource),
        )

    def client_certificate(self) -> ClientCertificate | None:
        if self.tls_client_cert is None or self.tls_client_key is None:
            return None
        return ClientCertificate(self.tls_client_cert, self.tls_client_key)

    def client_auth(self) -> ClientAuth:
        if self.client_auth_method == "private_key_jwt":
            return PrivateKeyJwt(self.client_id, self.signing_key())
        if self.client_auth_method in TLS_CLIENT_AUTH_METHODS:
            return TlsClientAuth(self.client_id, self.client_auth_method)
        assert self.client_secret is not None
        secret = self.client_secret.get_secret_value()
        if self.client_auth_method == "client_secret_post":
            return ClientSecretPost(self.client_id, secret)
        return ClientSecretBasic(self.client_id, secret)

    def validation_policy(self) -> ValidationPolicy:
        algs = self.id_token_signing_algs
        if self.fapi_mode:  # the default list narrowed; an explicit one was checked in _fapi
            algs = [alg for alg in algs if alg in FAPI_ALGS]
        return ValidationPolicy(
            allowed_algs=tuple(algs),
            trusted_audiences=frozenset(self.trusted_audiences),
            leeway_seconds=self.clock_leeway,
            max_iat_age_seconds=self.id_token_max_age,
            require_auth_req_id_claim=self.require_auth_req_id_claim,
            extra_scopes_allowed=(
                frozenset(self.extra_scopes_allowed)
                if self.extra_scopes_allowed is not None
                else self.profile.extra_scopes_allowed
            ),
            authorization_details_enrichment={
                kind: frozenset(members) for kind, members in self.authorization_details_enrichment.items()
            },
            acr_equivalents=(
                {acr: frozenset(values) for acr, values in self.acr_equivalents.items()}
                if self.acr_equivalents is not None
                else self.profile.acr_equivalents
            ),
        )

    def ciba_client(self) -> CibaClient:
        import httpx

        return CibaClient(
            issuer=self.issuer,
            client_auth=self.client_auth(),
            delivery_mode=self.delivery_mode,
            policy=self.validation_policy(),
            timeout=httpx.Timeout(self.http_timeout, connect=min(5.0, self.http_timeout)),
            request_signing_key=self.signing_key() if self.client_private_key is not None else None,
            sign_requests=self.signs_requests,
            dpop=self.dpop,
            id_token_decryption_key=(
                load_id_token_decryption_key(self.id_token_decryption_key) if self.id_token_decryption_key else None
            ),
            client_certificate=self.client_certificate(),
        )


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


def _env_name(settings_cls: type[BaseSettings], loc: tuple[object, ...]) -> str:
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
        name = _env_name(settings_cls, (field.group(1),) if field else ())
        raise ConfigError(f"configuration error: {name}: not valid JSON") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = _env_name(settings_cls, tuple(error["loc"]))
            if error["type"] == "missing":
                problems.append(f"{name} is required")
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{name}: {message}")
        raise ConfigError("configuration error: " + "; ".join(problems)) from None


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
    metrics_bind: str | None = Field(default=None, pattern=r"^[^:\s]+:[0-9]{1,5}$")

    @field_validator("payload_key")
    @classmethod
    def _key(cls, key: SecretStr) -> SecretStr:
        decode_payload_key(key.get_secret_value())
        return key

    @property
    def payload_key_bytes(self) -> bytes:
        return decode_payload_key(self.payload_key.get_secret_value())


class TokenKeySettings(TemporalSettings):
    """Programs that open tokens: the worker (sealed tokens) and the callback service
    (notification tokens). CIBA_TOKEN_KEY is a key of its own, so operators who hold only the
    payload key (to read history through the codec server) can neither open a token nor forge a
    notification."""

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


class RecordSettings(_Settings):
    """Where decision records are kept (temporal_ciba.records) and the key of their evidence."""

    # SQLite file, used unless RECORD_DSN is set.
    record_db: Path = Path("ciba-records.sqlite3")
    # PostgreSQL instead (postgresql://user:password@host/db; needs the `postgres` extra).
    record_dsn: SecretStr | None = None
    # Base64 keys, comma-separated: the first encrypts the evidence, each decrypts (rotation).
    # Unset: derived from CIBA_TOKEN_KEY (README, "Decision records").
    record_key: Annotated[list[SecretStr], NoDecode] = []

    @field_validator("record_key", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return _csv(value)

    @field_validator("record_key")
    @classmethod
    def _keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            decode_payload_key(key.get_secret_value())
        return keys

    @field_validator("record_dsn")
    @classmethod
    def _dsn(cls, dsn: SecretStr | None) -> SecretStr | None:
        if dsn is not None and not dsn.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return dsn

    def record_key_bytes(self, token_key: bytes | None) -> list[bytes]:
        """The record keys, or the one derived from the token key when none is set."""
        if self.record_key:
            return [decode_payload_key(key.get_secret_value()) for key in self.record_key]
        if token_key is None:
            raise ConfigError(f"{ENV_PREFIX}RECORD_KEY is required (or {ENV_PREFIX}TOKEN_KEY, its default)")
        return [derive_key(token_key, "decision record key v1")]


class AuditSettings(RecordSettings):
    """`temporal-ciba audit export`: the store and the record key (or the token key it derives from)."""

    token_key: SecretStr | None = None

    @field_validator("token_key")
    @classmethod
    def _token_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            decode_payload_key(key.get_secret_value())
        return key

    def evidence_key_bytes(self) -> list[bytes]:
        token_key = decode_payload_key(self.token_key.get_secret_value()) if self.token_key else None
        return self.record_key_bytes(token_key)


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
        return _existing_file(path)


class CallbackSettings(TokenKeySettings):
    """The ping/push receiver: HTTPS with the configured certificate, or plain HTTP only when asked."""

    callback_host: str = "127.0.0.1"
    callback_port: int = Field(default=8443, ge=0, le=65535)
    callback_path: str = Field(default="/ciba/notify", pattern=r"^/[A-Za-z0-9._~/-]*$")
    callback_tls_cert: Path | None = None
    callback_tls_key: Path | None = None
    # For local use only (the demo, tests): serve plain HTTP.
    callback_insecure_http: bool = False
    callback_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # Seconds for a request head to arrive (after the connection or the previous response), and
    # again for its body; slower clients are cut (408 for a late body).
    callback_read_timeout: float = Field(default=10.0, gt=0, le=300)
    # Open connections at most (idle and slow ones count); requests beyond get 503 at once.
    callback_max_connections: int = Field(default=512, ge=1, le=100_000)

    @field_validator("callback_tls_cert", "callback_tls_key")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return _existing_file(path)

    @model_validator(mode="after")
    def _tls(self) -> CallbackSettings:
        has_cert, has_key = self.callback_tls_cert is not None, self.callback_tls_key is not None
        if has_cert != has_key:
            missing = "CIBA_CALLBACK_TLS_KEY" if has_cert else "CIBA_CALLBACK_TLS_CERT"
            raise ConfigError(f"{missing} is required with the other TLS setting")
        if not has_cert and not self.callback_insecure_http:
            raise ConfigError(
                "CIBA_CALLBACK_TLS_CERT and CIBA_CALLBACK_TLS_KEY are required "
                "(or CIBA_CALLBACK_INSECURE_HTTP=true for local use)"
            )
        return self


CODEC_OPERATOR_TOKEN_MIN_LENGTH = 32
# Access tokens the codec server accepts from an OIDC issuer: RSA and EC signatures only.
CODEC_OIDC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


class CodecServerSettings(TemporalSettings):
    """The remote codec server for the Temporal UI and CLI. It decrypts history for whoever calls
    it, so every call must authenticate: an operator token (CLI `--codec-auth`) or an access
    token from an OIDC issuer (the UI's "pass access token"); at least one must be configured."""

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
    codec_oidc_http_timeout: float = Field(default=10.0, gt=0, le=30)
    codec_clock_leeway: int = Field(default=60, ge=0, le=600)
    # /encode makes ciphertext the worker will accept: off unless asked for.
    codec_allow_encode: bool = False
    codec_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # HTTPS (the Temporal UI passes the access token only to an https codec endpoint).
    codec_tls_cert: Path | None = None
    codec_tls_key: Path | None = None

    @field_validator(
        "codec_cors_origins", "codec_allowed_hosts", "codec_oidc_audience", "codec_oidc_algs", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        return _csv(value)

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
        values = _csv(tokens.get_secret_value())
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

    @field_validator("codec_tls_cert", "codec_tls_key")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return _existing_file(path)

    @model_validator(mode="after")
    def _authenticated(self) -> CodecServerSettings:
        if self.codec_operator_tokens is None and self.codec_oidc_issuer is None:
            raise ConfigError(
                f"{ENV_PREFIX}CODEC_OPERATOR_TOKENS or {ENV_PREFIX}CODEC_OIDC_ISSUER is required: "
                "the codec server decrypts history and must authenticate its callers"
            )
        if self.codec_oidc_issuer is not None and not self.codec_oidc_audience:
            raise ConfigError(f"{ENV_PREFIX}CODEC_OIDC_AUDIENCE is required with {ENV_PREFIX}CODEC_OIDC_ISSUER")
        if (self.codec_tls_cert is None) != (self.codec_tls_key is None):
            missing = "CODEC_TLS_KEY" if self.codec_tls_key is None else "CODEC_TLS_CERT"
            raise ConfigError(f"{ENV_PREFIX}{missing} is required with the other TLS setting")
        return self

    def operator_tokens(self) -> list[str]:
        if self.codec_operator_tokens is None:
            return []
        values = _csv(self.codec_operator_tokens.get_secret_value())
        assert isinstance(values, list)
        return values

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
