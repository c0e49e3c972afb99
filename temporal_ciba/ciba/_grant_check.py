"""Step 5 of the validation pipeline: the token response grants what was asked.

The pipeline is temporal_ciba.ciba._validation; what was asked is the scope (RFC 6749 §5.1) and
the authorization_details (RFC 9396)."""

from __future__ import annotations

import json
from typing import Any

from ._binding import RequestBinding, ValidationPolicy, _reject
from ._token import TokenResponse


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_scope(tokens: TokenResponse, binding: RequestBinding, policy: ValidationPolicy) -> str:
    """Every requested scope must be granted; returns the scope granted.

    RFC 6749 §5.1: the OP states the granted scope when it differs. Extra ones are accepted only
    from `policy.extra_scopes_allowed`. The scope returned is the requested one, plus the allowed
    extras.

    `openid` asks for the ID token, which we hold and have validated; an OP whose access token
    is for a resource server (RFC 8707) lists only that server's scopes, so `openid` is not
    compared.
    """
    requested = [scope for scope in binding.scope.split() if scope != "openid"]
    # RFC 6749 §5.1: scope may be omitted when it is identical to the scope requested.
    granted = [scope for scope in tokens.scope.split() if scope != "openid"] if tokens.scope is not None else requested
    missing = [scope for scope in requested if scope not in granted]
    extra = [scope for scope in dict.fromkeys(granted) if scope not in requested]
    refused = [scope for scope in extra if scope not in policy.extra_scopes_allowed]
    if missing or refused:
        detail = "; ".join(
            part
            for part in (
                f"not granted: {' '.join(missing)}" if missing else "",
                f"not requested: {' '.join(refused)}" if refused else "",
            )
            if part
        )
        raise _reject("scope_mismatch", "scope", f"granted scope differs from the request ({detail})", binding.scope)
    return " ".join([binding.scope, *extra])


def _enriched_detail_matches(requested: dict[str, Any], granted: dict[str, Any], may_add: frozenset[str]) -> bool:
    """RFC 9396 §6.1: the granted detail holds what was requested, enriched only as allowed.

    It holds every requested member (its `type` too) with an equal value, and adds only members
    the policy names for its type."""
    if any(name not in granted or _canonical(granted[name]) != _canonical(value) for name, value in requested.items()):
        return False
    return all(name in requested or name in may_add for name in granted)


def check_authorization_details(tokens: TokenResponse, binding: RequestBinding, policy: ValidationPolicy) -> None:
    """The granted authorization_details equal those requested, in the same order.

    RFC 9396 §7: the OP MUST return them when it grants them. For a type in
    `policy.authorization_details_enrichment`, each may carry the members named there in addition."""
    if binding.authorization_details is None:
        if tokens.authorization_details is not None:
            raise _reject(
                "authorization_details_mismatch",
                "authorization_details",
                "the grant carries authorization_details that were never requested",
            )
        return
    if tokens.authorization_details is None:
        raise _reject(
            "authorization_details_missing",
            "authorization_details",
            "authorization_details were requested but the grant does not state them (RFC 9396 §7)",
        )
    if _canonical(tokens.authorization_details) == _canonical(binding.authorization_details):
        return
    granted = tokens.authorization_details
    if len(granted) == len(binding.authorization_details) and all(
        requested["type"] in policy.authorization_details_enrichment
        and _enriched_detail_matches(
            requested, granted[index], policy.authorization_details_enrichment[requested["type"]]
        )
        for index, requested in enumerate(binding.authorization_details)
    ):
        return
    raise _reject(
        "authorization_details_mismatch",
        "authorization_details",
        "the granted authorization_details differ from those requested",
    )


def check_grant(tokens: TokenResponse, binding: RequestBinding, policy: ValidationPolicy | None = None) -> str:
    """The grant is what was asked; returns the granted scope.

    Checks the scope (check_scope) and the authorization_details (check_authorization_details)."""
    policy = policy or ValidationPolicy()
    scope = check_scope(tokens, binding, policy)
    check_authorization_details(tokens, binding, policy)
    return scope
