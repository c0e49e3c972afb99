"""The protocol objects built from `OPSettings`.

The CIBA client, its client authentication, the ID token validation policy and the request
dialect. Apart from the settings so that `OPSettings` stays a list of variables and the rules between
them; each `OPSettings` method of the same name calls the function here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporal_ciba.ciba import (
    TLS_CLIENT_AUTH_METHODS,
    BindingMessageRule,
    CibaClient,
    ClientAuth,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    RequestDialect,
    TlsClientAuth,
    ValidationPolicy,
    load_id_token_decryption_key,
)

if TYPE_CHECKING:
    from temporal_ciba._settings.op import OPSettings


def request_dialect(op: OPSettings) -> RequestDialect:
    """The profile's request rules, with each one set in the environment instead."""
    dialect = op.profile.request
    rule = dialect.binding_message
    return RequestDialect(
        binding_message=BindingMessageRule(
            max_length=op.binding_message_max_length or rule.max_length,
            pattern=op.binding_message_pattern if op.binding_message_pattern is not None else rule.pattern,
        ),
        login_hint_format=op.login_hint_format or dialect.login_hint_format,
        required_parameters=(
            frozenset(op.required_parameters) if op.required_parameters is not None else dialect.required_parameters
        ),
        default_audience=op.audience,
        default_resource=tuple(op.resource),
    )


def client_auth(op: OPSettings) -> ClientAuth:
    """The client authentication of CIBA_CLIENT_AUTH_METHOD, the same at every endpoint of the OP."""
    if op.client_auth_method == "private_key_jwt":
        return PrivateKeyJwt(op.client_id, op.signing_key())
    if op.client_auth_method in TLS_CLIENT_AUTH_METHODS:
        return TlsClientAuth(op.client_id, op.client_auth_method)
    assert op.client_secret is not None
    secret = op.client_secret.get_secret_value()
    if op.client_auth_method == "client_secret_post":
        return ClientSecretPost(op.client_id, secret)
    return ClientSecretBasic(op.client_id, secret)


def validation_policy(op: OPSettings) -> ValidationPolicy:
    """What an ID token must satisfy: the settings where given, the OP profile's defaults otherwise."""
    return ValidationPolicy(
        allowed_algs=op.allowed_id_token_algs,
        trusted_audiences=frozenset(op.trusted_audiences),
        leeway_seconds=op.clock_leeway,
        max_iat_age_seconds=op.id_token_max_age,
        require_auth_req_id_claim=op.require_auth_req_id_claim,
        extra_scopes_allowed=(
            frozenset(op.extra_scopes_allowed)
            if op.extra_scopes_allowed is not None
            else op.profile.extra_scopes_allowed
        ),
        authorization_details_enrichment={
            kind: frozenset(members) for kind, members in op.authorization_details_enrichment.items()
        },
        acr_equivalents=(
            {acr: frozenset(values) for acr, values in op.acr_equivalents.items()}
            if op.acr_equivalents is not None
            else op.profile.acr_equivalents
        ),
    )


def ciba_client(op: OPSettings) -> CibaClient:
    """The CIBA relying party: client authentication, validation policy, keys and transport."""
    import httpx

    return CibaClient(
        issuer=op.issuer,
        client_auth=op.client_auth(),
        delivery_mode=op.delivery_mode,
        policy=op.validation_policy(),
        timeout=httpx.Timeout(op.http_timeout, connect=min(5.0, op.http_timeout)),
        request_signing_key=op.signing_key() if op.client_private_key is not None else None,
        sign_requests=op.signs_requests,
        dpop=op.dpop,
        id_token_decryption_key=(
            load_id_token_decryption_key(op.id_token_decryption_key) if op.id_token_decryption_key else None
        ),
        client_certificate=op.client_certificate(),
    )
