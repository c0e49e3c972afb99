"""The search attributes that let operators find approvals (design brief §3)."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CIBA_STATUS = SearchAttributeKey.for_keyword("CibaStatus")
CIBA_AUTH_REQ_ID = SearchAttributeKey.for_keyword("CibaAuthReqId")
CIBA_DEADLINE = SearchAttributeKey.for_datetime("CibaDeadline")
ALL = (CIBA_STATUS, CIBA_AUTH_REQ_ID, CIBA_DEADLINE)
