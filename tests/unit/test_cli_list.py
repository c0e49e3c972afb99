"""`temporal-ciba list --status` offers exactly the phases an approval can be in."""

from __future__ import annotations

import typing

import pytest

from temporal_ciba._cli import LIST_STATUSES, build_parser
from temporal_ciba._models import ApprovalPhase


def test_list_statuses_are_the_phases() -> None:
    phases: set[str] = set()
    for part in typing.get_args(ApprovalPhase):
        phases.update(typing.get_args(part) or (part,))
    assert set(LIST_STATUSES) == phases
    assert build_parser().parse_args(["list", "--status", "approved"]).status == "approved"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["list", "--status", "aproved"])
    assert exited.value.code == 2
