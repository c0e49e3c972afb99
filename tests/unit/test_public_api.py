"""The public API, pinned: what `temporal_ciba` and its public subpackages export.

Modeled on httpx's tests/test_exported_members.py. Two rules:

- Complete: a public package's `__all__` is every public (non-underscore) name in its namespace,
  sorted (constants, then classes, then functions, each alphabetical), except modules: its
  subpackages and modules (`temporal_ciba.ciba`, ...) and a module it imports for its own use
  (`temporalio.workflow`). Anything else it needs for itself it imports under a leading
  underscore, so nothing reaches its namespace without a decision to export it.
- Pinned: the exact names, so removing or renaming a public name is a visible change here.

The framework modules (`agents.openai`, `agents.pydantic_ai`, `agents.both_frameworks`) are
modules, not packages: they import what they use, so for them `__all__` holds every public class
and function they define.
"""

from __future__ import annotations

import importlib
import types

import pytest

PUBLIC_API: dict[str, list[str]] = {
    "temporal_ciba": [
        "CIBA_AUTH_REQ_ID",
        "CIBA_DEADLINE",
        "CIBA_STATUS",
        "WORKER_POLICY",
        "AesGcmCodec",
        "ApprovalOutcome",
        "ApprovalPolicy",
        "ApprovalRequest",
        "ApprovalState",
        "ApprovalWorkflowInput",
        "ApproverClaims",
        "CibaActivities",
        "CibaApprovalWorkflow",
        "CibaPlugin",
        "ConfigError",
        "GrantRefused",
        "OPSettings",
        "OutcomeStatus",
        "PayloadDecryptionError",
        "PolicyAction",
        "PolicyDecision",
        "PolicyRule",
        "PollingPolicy",
        "SealError",
        "SearchAttributesMissing",
        "TokenKeySettings",
        "TokenSealer",
        "WorkerSettings",
        "access_token_context",
        "ensure_search_attributes",
        "idempotency_key",
        "load_settings",
        "open_access_token",
        "require_approval",
        "with_encryption",
    ],
    "temporal_ciba.ciba": [
        "ASYMMETRIC_ALGS",
        "AUTH_REQ_ID_CLAIM",
        "BINDING_MESSAGE_MAX_LENGTH",
        "CIBA_GRANT_TYPE",
        "DEFAULT_TIMEOUT",
        "PROFILES",
        "PROOF_MAX_AGE_SECONDS",
        "TLS_CLIENT_AUTH_METHODS",
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
        "ClientCertificate",
        "ClientSecretBasic",
        "ClientSecretPost",
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
        "InvalidDPoPProof",
        "InvalidGrant",
        "InvalidRequest",
        "InvalidScope",
        "InvalidUserCode",
        "JwksCache",
        "KeyNotFound",
        "LoginHintFormat",
        "MissingUserCode",
        "OAuthError",
        "OPProfile",
        "Pending",
        "PollSchedule",
        "PrivateKeyJwt",
        "ProfileName",
        "ProtocolError",
        "ProviderMetadata",
        "PublicKey",
        "RequestBinding",
        "RequestDialect",
        "RequiredParameter",
        "RetryLater",
        "Secret",
        "SlowDown",
        "TlsClientAuth",
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
        "certificate_thumbprint",
        "check_pattern",
        "check_resource_indicators",
        "fetch_jwks",
        "fetch_provider_metadata",
        "fit_binding_message",
        "json_object",
        "load_client_signing_key",
        "load_id_token_decryption_key",
        "new_client_notification_token",
        "parse_jwks",
        "parse_token_response",
        "require_secure_url",
        "select_keys",
        "shape_request",
        "verify_proof",
        "verify_signature",
    ],
    "temporal_ciba.crypto": [
        "AesGcmCodec",
        "DPoPKeys",
        "NotificationProofs",
        "NotificationTokens",
        "NotifiedApproval",
        "PayloadDecryptionError",
        "SealError",
        "TokenSealer",
        "access_token_context",
        "derive_key",
        "id_token_context",
        "refusal",
        "tokens_context",
    ],
    "temporal_ciba.records": [
        "Checkpoint",
        "DecisionRecord",
        "DecisionRecorder",
        "DecisionStore",
        "EvidenceError",
        "EvidenceKeys",
        "LogSigner",
        "PostgresStore",
        "RecordConflict",
        "RecordDecisionInput",
        "RecordQuery",
        "RecordStoreError",
        "RecordedDecision",
        "Report",
        "SqliteStore",
        "StoredRecord",
        "discover_jwks",
        "export",
        "load_jwks",
        "load_log_key",
        "open_store",
        "parse_export",
        "record_id",
        "verify",
        "verify_export",
    ],
    "temporal_ciba.agents": [
        "ApprovedToolCall",
        "ToolApproval",
        "ToolArguments",
        "approval_workflow_id",
        "ask_for_tool_call",
        "open_tool_call",
        "refusal_for_model",
        "short_code",
        "tool_action_digest",
        "tool_approval_id",
    ],
    "temporal_ciba.agents.openai": [
        "GatedTool",
        "ToolApprovals",
        "gated_activity_as_tool",
        "run_with_approvals",
    ],
    "temporal_ciba.agents.pydantic_ai": [
        "METADATA_KEY",
        "CibaToolApprovals",
        "approval_outcome",
        "approved_call",
        "tool_arguments_json",
    ],
    "temporal_ciba.agents.both_frameworks": [
        "BothFrameworksConverter",
        "BothFrameworksPayloadConverter",
    ],
    "temporal_ciba.mcp": [
        "CALL_ID_META",
        "CALL_UPSTREAM",
        "McpCallState",
        "McpClient",
        "McpGateway",
        "McpGatewayActivities",
        "McpGatewayPlugin",
        "McpToolCallInput",
        "McpToolCallResult",
        "McpToolCallWorkflow",
        "OidcTokenVerifier",
        "OwnTool",
        "UpstreamServer",
        "approver_is_client",
        "as_call_tool_result",
        "check_approved",
        "mcp_call_workflow_id",
        "open_upstream",
    ],
}
PACKAGES = [
    "temporal_ciba",
    "temporal_ciba.ciba",
    "temporal_ciba.crypto",
    "temporal_ciba.records",
    "temporal_ciba.agents",
    "temporal_ciba.mcp",
]
FRAMEWORK_MODULES = sorted(set(PUBLIC_API) - set(PACKAGES))


def _sorted(names: list[str]) -> list[str]:
    """Constants (UPPER_CASE), then classes (CamelCase), then the rest, each alphabetical."""
    return sorted(names, key=lambda name: (0 if name.isupper() else 1 if name[:1].isupper() else 2, name))


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_exports_every_public_member(name: str) -> None:
    package = importlib.import_module(name)
    members = [
        member
        for member, value in vars(package).items()
        if not member.startswith("_") and not isinstance(value, types.ModuleType)
    ]
    assert package.__all__ == _sorted(members)


@pytest.mark.parametrize("name", FRAMEWORK_MODULES)
def test_a_framework_module_exports_what_it_defines(name: str) -> None:
    module = importlib.import_module(name)
    defined = [
        member
        for member, value in vars(module).items()
        if not member.startswith("_") and getattr(value, "__module__", None) == name
    ]
    assert set(defined) <= set(module.__all__)
    assert module.__all__ == _sorted(module.__all__)
    assert [member for member in module.__all__ if not hasattr(module, member)] == []


@pytest.mark.parametrize("name", sorted(PUBLIC_API))
def test_the_public_names_are_pinned(name: str) -> None:
    assert importlib.import_module(name).__all__ == PUBLIC_API[name]
