"""temporal-ciba: durable human approval for Temporal workflows through OpenID Connect CIBA.

    from temporal_ciba import ApprovalRequest, CibaPlugin, require_approval

Layers, each importing only the ones below it:

    temporal_ciba._cli                 the `temporal-ciba` command
    temporal_ciba.mcp                 the MCP gateway (extra: mcp)
    temporal_ciba._programs            worker, callback service, codec server, connection, telemetry
    temporal_ciba (this module)       models, settings, activities, workflow, plugin, search attributes
    temporal_ciba.crypto              payload codec, token sealing, notification tokens
    temporal_ciba.ciba                the CIBA relying party (no Temporal import)
"""

from temporalio import workflow

# Workflow code imports this package inside Temporal's sandbox; its modules are deterministic
# (models, the workflow) or used only outside workflows (activities, plugin, httpx), so they
# pass through instead of being re-imported, and the sandbox never sees their I/O imports.
with workflow.unsafe.imports_passed_through():
    from temporal_ciba._activities import CibaActivities
    from temporal_ciba._grant import GrantRefused, idempotency_key, open_access_token
    from temporal_ciba._models import (
        ApprovalOutcome,
        ApprovalRequest,
        ApprovalState,
        ApprovalWorkflowInput,
        ApproverClaims,
        OutcomeStatus,
        PolicyDecision,
        PollingPolicy,
    )
    from temporal_ciba._plugin import CibaPlugin, with_encryption
    from temporal_ciba._policy import ApprovalPolicy, PolicyAction, PolicyRule
    from temporal_ciba._search_attributes import (
        CIBA_AUTH_REQ_ID,
        CIBA_DEADLINE,
        CIBA_STATUS,
        SearchAttributesMissing,
        ensure_search_attributes,
    )
    from temporal_ciba._settings import ConfigError, OPSettings, TokenKeySettings, WorkerSettings, load_settings
    from temporal_ciba._workflow import WORKER_POLICY, CibaApprovalWorkflow, require_approval
    from temporal_ciba.crypto import AesGcmCodec, PayloadDecryptionError, SealError, TokenSealer, access_token_context

__all__ = [
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
]
