"""The OpenID provider, this client's registration at it, and the FAPI-CIBA rules (`OPSettings`).

Every rule is checked when the settings load, so a worker with an unusable registration (a key
that does not load, a delivery mode the OP lacks, a FAPI violation) stops at start with one line
naming the variable. The protocol objects these settings describe are built in `factories`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from temporal_ciba._settings import factories
from temporal_ciba._settings.loading import ENV_PREFIX, ConfigError, _Settings, existing_file, split_list
from temporal_ciba.ciba import (
    ASYMMETRIC_ALGS,
    BINDING_MESSAGE_MAX_LENGTH,
    PROFILES,
    TLS_CLIENT_AUTH_METHODS,
    CibaClient,
    ClientAuth,
    ClientAuthMethod,
    ClientCertificate,
    ClientSigningKey,
    DeliveryMode,
    LoginHintFormat,
    OPProfile,
    ProfileName,
    RequestDialect,
    RequiredParameter,
    ValidationPolicy,
    check_pattern,
    check_resource_indicators,
    load_client_signing_key,
    load_id_token_decryption_key,
    require_secure_url,
)

# FAPI 1.0 Advanced §8.6 (and FAPI-CIBA by reference): the only JWS algorithms allowed.
FAPI_ALGS = frozenset({"PS256", "ES256"})


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
        return split_list(value)

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
        return split_list(value)

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
        return existing_file(path)

    @field_validator("id_token_decryption_key")
    @classmethod
    def _decryption_key(cls, path: Path | None) -> Path | None:
        if existing_file(path) is not None:
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
        """The OP's dialect (CIBA_OP_PROFILE), which the rules set here override."""
        return PROFILES[self.op_profile]

    @property
    def allowed_id_token_algs(self) -> tuple[str, ...]:
        """The ID token algorithms to accept, PS256 and ES256 only under FAPI.

        Under FAPI the default list is narrowed; an explicit list was checked in `_fapi`."""
        algs = self.id_token_signing_algs
        if self.fapi_mode:
            algs = [alg for alg in algs if alg in FAPI_ALGS]
        return tuple(algs)

    def client_certificate(self) -> ClientCertificate | None:
        """The RFC 8705 certificate and key this client presents, or None."""
        if self.tls_client_cert is None or self.tls_client_key is None:
            return None
        return ClientCertificate(self.tls_client_cert, self.tls_client_key)

    def request_dialect(self) -> RequestDialect:
        """The profile's request rules, with each one set in the environment instead."""
        return factories.request_dialect(self)

    def client_auth(self) -> ClientAuth:
        """How this client authenticates at the OP's endpoints."""
        return factories.client_auth(self)

    def validation_policy(self) -> ValidationPolicy:
        """What an ID token from this OP must satisfy."""
        return factories.validation_policy(self)

    def ciba_client(self) -> CibaClient:
        """The CIBA relying party for this OP and registration."""
        return factories.ciba_client(self)
