"""OP profiles: the dialect of each OP people run CIBA with, as its own documentation states it.

A profile bundles what differs between OPs: the binding-message rule and the login_hint format
(`RequestDialect`), the parameters it requires, the extra scopes it adds to a grant, the acr
values it answers, and the delivery modes it offers. `CIBA_OP_PROFILE` picks one; every rule can
also be set on its own (temporal_ciba._settings). `generic` is CIBA Core as written, with nothing
that one OP adds or requires; it is the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ._binding import IDENTITY_SCOPES
from ._binding_message import BindingMessageRule
from ._dialect import RequestDialect
from ._discovery import DeliveryMode

ProfileName = Literal["generic", "auth0", "keycloak", "ping", "authlete", "curity", "fapi-ciba"]
ALL_DELIVERY_MODES: tuple[DeliveryMode, ...] = ("poll", "ping", "push")


class OPProfile(BaseModel):
    """One OP's dialect; `temporal_ciba._settings.OPSettings` overrides any part of it."""

    model_config = ConfigDict(frozen=True)

    name: ProfileName
    request: RequestDialect = RequestDialect()
    # Scopes the OP may add to the grant (ValidationPolicy.extra_scopes_allowed).
    extra_scopes_allowed: frozenset[str] = IDENTITY_SCOPES
    # A requested acr -> values the OP answers that are at least as strong.
    acr_equivalents: Mapping[str, frozenset[str]] = Field(default_factory=dict)
    delivery_modes: tuple[DeliveryMode, ...] = ALL_DELIVERY_MODES


PROFILES: dict[str, OPProfile] = {
    # CIBA Core 1.0 as written: a binding message of plain text on one line, at most 128
    # characters (our own ceiling); every delivery mode.
    "generic": OPProfile(name="generic"),
    # Auth0, "User Authentication with CIBA" (auth0.com/docs/get-started/authentication-and-
    # authorization-flow/client-initiated-backchannel-authentication-flow): binding_message
    # "required and up to 64 characters. Use only alphanumeric and +-_.,:# characters";
    # login_hint `{"format": "iss_sub", "iss": "https://TENANT/", "sub": USER_ID}`; an access
    # token for an API needs `audience` (without it the grant is narrowed to the OIDC scopes);
    # the client polls /oauth/token (poll mode only).
    "auth0": OPProfile(
        name="auth0",
        request=RequestDialect(
            binding_message=BindingMessageRule(max_length=64, pattern=r"^[a-zA-Z0-9+\-_.,:#]{1,64}$"),
            login_hint_format="iss_sub",
            required_parameters=frozenset({"audience", "binding_message"}),
        ),
        delivery_modes=("poll",),
    ),
    # Keycloak, BackchannelAuthenticationEndpoint (keycloak/keycloak, services/.../grants/ciba):
    # binding_message matches ^[a-zA-Z0-9-._+/!?#]{1,50}$ ("max 50 characters ... without
    # spaces", also Red Hat solution 7112402); the client's default scopes shown on the consent
    # screen (profile, email, ...) are added to the requested scope; user_code is refused; poll
    # and ping only (no push). Its acr answers are level-of-assurance values mapped per realm
    # ("ACR to LoA mapping", Server Administration Guide): set CIBA_ACR_EQUIVALENTS to match.
    "keycloak": OPProfile(
        name="keycloak",
        request=RequestDialect(
            binding_message=BindingMessageRule(max_length=50, pattern=r"^[a-zA-Z0-9-._+/!?#]{1,50}$")
        ),
        delivery_modes=("poll", "ping"),
    ),
    # Ping Identity: PingAM /oauth2/bc-authorize (docs.pingidentity.com/pingam, "oauth2 bc
    # authorize endpoint") takes the request as a signed JWT (CIBA §7.1.1, the FAPI-CIBA work)
    # with a binding message of up to 100 characters; PingFederate (/as/bc-auth.ciba, "Client-
    # initiated backchannel authentication endpoint") offers poll and ping; PingOne poll only.
    "ping": OPProfile(
        name="ping",
        request=RequestDialect(binding_message=BindingMessageRule(max_length=100)),
        delivery_modes=("poll", "ping"),
    ),
    # Authlete implements CIBA Core as written, all three delivery modes (authlete.com, "CIBA"
    # and its /backchannel/authentication API); the binding message rule is the service's own.
    "authlete": OPProfile(name="authlete"),
    # Curity Identity Server, client-capabilities/backchannel-authentication (curity.io/docs,
    # configuration reference): binding-message-max-length defaults to 10000 (our 128 rules);
    # must-sign-request-object may require signed requests (CIBA_SIGN_AUTHENTICATION_REQUESTS).
    "curity": OPProfile(name="curity"),
    # FAPI-CIBA (OpenID FAPI CIBA Profile §5.2.2): the OP "shall not support CIBA push mode".
    # Its client rules (signed requests, private_key_jwt or mTLS, PS256/ES256, sender-constrained
    # tokens) are OPSettings' FAPI mode, which this profile turns on.
    "fapi-ciba": OPProfile(name="fapi-ciba", delivery_modes=("poll", "ping")),
}
