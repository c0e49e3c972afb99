"""Who may approve a request: the sources that name the approver must agree.

Otherwise the request is refused before it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporal_ciba._models import ApprovalRequest
from temporal_ciba.ciba import AuthenticationRequest, CibaClient, RequestDialect

# The send activity's error when two sources name different approvers.
SUBJECT_CONFLICT = "subject_conflict"


class SubjectConflict(ValueError):
    """Two sources name different approvers for one request."""


class ApproverSubjects:
    """The `sub` an approval's ID token must carry (RequestBinding.expected_subject), if known."""

    def __init__(self, ciba: CibaClient, dialect: RequestDialect, login_hint_subjects: Mapping[str, str]) -> None:
        self._ciba = ciba
        self._dialect = dialect
        self._login_hint_subjects = dict(login_hint_subjects)

    async def expected(self, approval: ApprovalRequest, request: AuthenticationRequest) -> str | None:
        """The approver's `sub`, if known; SubjectConflict if the sources disagree.

        The caller's expected_subject, an iss_sub login_hint (it is the `sub`) and a verified
        id_token_hint's `sub` must agree; without any of them, the configured subject of the
        login_hint."""
        sources = {
            "expected_subject": approval.expected_subject,
            "the iss_sub login_hint": approval.login_hint if self._dialect.login_hint_format == "iss_sub" else None,
            "the id_token_hint": (
                await self._ciba.id_token_hint_subject(request.id_token_hint.get_secret_value())
                if request.id_token_hint is not None
                else None
            ),
        }
        named = {source: subject for source, subject in sources.items() if subject is not None}
        if len(set(named.values())) > 1:
            raise SubjectConflict(f"the approver is named differently by {', '.join(named)}")
        if not named and approval.login_hint is not None:
            return self._login_hint_subjects.get(approval.login_hint)
        return next(iter(named.values()), None)
