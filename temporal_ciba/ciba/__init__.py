"""A CIBA (OpenID Connect Client-Initiated Backchannel Authentication Core 1.0) relying party.

Organised by the spec, free of Temporal: discovery (§4), client authentication (§7.1),
the backchannel request and acknowledgement (§7), the token request and polling (§10, §11),
and validation of the tokens against the original request (OIDC Core §3.1.3.7); and the
dialects of the OPs people run (binding-message rules, login_hint formats: `profiles`).
"""

from ._http import json_object, require_secure_url
from .backchannel import Acknowledgement, AuthenticationRequest, new_client_notification_token
from .binding_message import BindingMessageRule, BindingMessageUnfit, fit_binding_message
from .client import DEFAULT_TIMEOUT, CibaClient
from .client_auth import (
    ClientAuth,
    ClientSecretBasic,
    ClientSecretPost,
    ClientSigningKey,
    PrivateKeyJwt,
    TlsClientAuth,
    load_client_signing_key,
)
from .dialect import RequestDialect, shape_request
from .discovery import CIBA_GRANT_TYPE, ClientAuthMethod, DeliveryMode, ProviderMetadata
from .dpop import DPoPKey
from .errors import (
    AccessDenied,
    CibaError,
    DiscoveryError,
    ExpiredLoginHintToken,
    ExpiredToken,
    InvalidAuthenticationRequest,
    InvalidBindingMessage,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidUserCode,
    KeyNotFound,
    MissingUserCode,
    OAuthError,
    ProtocolError,
    TokenRejected,
    TokenRequestInFlight,
    TransactionFailed,
    TransportError,
    UnauthorizedClient,
    UnknownUserId,
    UnsupportedGrantType,
)
from .mtls import ClientCertificate, certificate_thumbprint
from .profiles import PROFILES, OPProfile
from .token import Granted, Pending, PollSchedule, RetryLater, SlowDown, TokenPollResult, TokenResponse
from .types import AuthorizationDetails, Secret
from .validation import AUTH_REQ_ID_CLAIM, RequestBinding, ValidatedApproval, ValidationPolicy

__all__ = [
    "AUTH_REQ_ID_CLAIM",
    "CIBA_GRANT_TYPE",
    "DEFAULT_TIMEOUT",
    "PROFILES",
    "AccessDenied",
    "Acknowledgement",
    "AuthenticationRequest",
    "AuthorizationDetails",
    "BindingMessageRule",
    "BindingMessageUnfit",
    "CibaClient",
    "CibaError",
    "ClientAuth",
    "ClientAuthMethod",
    "certificate_thumbprint",
    "ClientSecretBasic",
    "ClientSecretPost",
    "ClientCertificate",
    "TlsClientAuth",
    "ClientSigningKey",
    "DPoPKey",
    "DeliveryMode",
    "DiscoveryError",
    "ExpiredLoginHintToken",
    "ExpiredToken",
    "Granted",
    "InvalidAuthenticationRequest",
    "InvalidBindingMessage",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidUserCode",
    "KeyNotFound",
    "MissingUserCode",
    "OAuthError",
    "OPProfile",
    "Pending",
    "PollSchedule",
    "PrivateKeyJwt",
    "ProtocolError",
    "ProviderMetadata",
    "RequestBinding",
    "RequestDialect",
    "RetryLater",
    "Secret",
    "SlowDown",
    "TokenPollResult",
    "TokenRejected",
    "TokenRequestInFlight",
    "TokenResponse",
    "TransactionFailed",
    "TransportError",
    "UnauthorizedClient",
    "UnknownUserId",
    "UnsupportedGrantType",
    "ValidatedApproval",
    "ValidationPolicy",
    "fit_binding_message",
    "json_object",
    "load_client_signing_key",
    "new_client_notification_token",
    "require_secure_url",
    "shape_request",
]
