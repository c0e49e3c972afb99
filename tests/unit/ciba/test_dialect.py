"""shape_request applies an OP's dialect to a backchannel request before it is sent.

On the request alone (tests/unit/test_request_dialect.py drives it through the send activity)."""

from __future__ import annotations

from typing import Any

import pytest

from temporal_ciba.ciba._backchannel import AuthenticationRequest
from temporal_ciba.ciba._binding_message import BindingMessageRule, BindingMessageUnfit
from temporal_ciba.ciba._dialect import RequestDialect, shape_request
from temporal_ciba.ciba._errors import InvalidAuthenticationRequest

ISSUER = "https://op.example"
API = "https://api.example"
PAYMENTS = "https://payments.example/"
LEDGER = "https://ledger.example/"
NO_SPACES = BindingMessageRule(max_length=20, pattern=r"^[a-zA-Z0-9-._+/!?#]{1,20}$")


def _shape(dialect: RequestDialect, *, code: str | None = None, **fields: Any) -> AuthenticationRequest:
    return shape_request(AuthenticationRequest(**fields), dialect, issuer=ISSUER, code=code)


def test_the_default_dialect_leaves_the_request_as_it_is() -> None:
    request = AuthenticationRequest(login_hint="alice", binding_message="Pay EUR 120.00, code 7Q4K")
    assert shape_request(request, RequestDialect(), issuer=ISSUER, code="7Q4K") == request


def test_the_binding_message_is_fitted_to_the_rule_keeping_the_code() -> None:
    dialect = RequestDialect(binding_message=NO_SPACES)
    shaped = _shape(dialect, code="7Q4K", login_hint="alice", binding_message="Pay EUR 120.00 to ACME GmbH, code 7Q4K")
    assert shaped.binding_message == "Pay-EUR-120.00-7Q4K"


def test_without_a_binding_message_none_is_made_up() -> None:
    shaped = _shape(RequestDialect(binding_message=NO_SPACES), code="7Q4K", login_hint="alice")
    assert shaped.binding_message is None


def test_a_binding_message_that_cannot_fit_is_refused() -> None:
    with pytest.raises(BindingMessageUnfit):
        _shape(
            RequestDialect(binding_message=NO_SPACES),
            code=None,
            login_hint="alice",
            binding_message="Pay EUR 120.00 to ACME GmbH",
        )


def test_iss_sub_login_hint_is_compact_json_naming_the_issuer_and_the_subject() -> None:
    shaped = _shape(RequestDialect(login_hint_format="iss_sub"), login_hint="auth0|123")
    assert shaped.login_hint == '{"format":"iss_sub","iss":"https://op.example","sub":"auth0|123"}'


def test_plain_login_hint_is_sent_as_given() -> None:
    assert _shape(RequestDialect(login_hint_format="plain"), login_hint="auth0|123").login_hint == "auth0|123"


def test_iss_sub_adds_no_login_hint_to_a_request_that_names_the_user_otherwise() -> None:
    shaped = _shape(RequestDialect(login_hint_format="iss_sub"), login_hint_token="lht-opaque")
    assert shaped.login_hint is None
    assert shaped.login_hint_token is not None and shaped.login_hint_token.get_secret_value() == "lht-opaque"


def test_the_default_audience_fills_only_a_missing_audience() -> None:
    dialect = RequestDialect(default_audience=API)
    assert _shape(dialect, login_hint="alice").audience == API
    assert _shape(dialect, login_hint="alice", audience="https://other.example").audience == "https://other.example"
    assert _shape(RequestDialect(), login_hint="alice").audience is None


def test_the_default_resources_fill_only_missing_resources() -> None:
    dialect = RequestDialect(default_resource=(PAYMENTS, LEDGER))
    assert _shape(dialect, login_hint="alice").resource == (PAYMENTS, LEDGER)
    assert _shape(dialect, login_hint="alice", resource=(LEDGER,)).resource == (LEDGER,)
    assert _shape(RequestDialect(), login_hint="alice").resource == ()


@pytest.mark.parametrize(
    "required,fields",
    [
        ({"audience"}, {}),
        ({"resource"}, {}),
        ({"binding_message"}, {}),
        ({"acr_values"}, {}),
        ({"requested_expiry"}, {}),
        ({"audience", "resource"}, {"audience": API}),
    ],
    ids=["audience", "resource_empty", "binding_message", "acr_values", "requested_expiry", "one_of_two_missing"],
)
def test_a_required_parameter_missing_refuses_the_request_naming_it(required: set[str], fields: dict[str, Any]) -> None:
    dialect = RequestDialect(required_parameters=frozenset(required))
    with pytest.raises(InvalidAuthenticationRequest) as caught:
        _shape(dialect, login_hint="alice", **fields)
    missing = sorted(name for name in required if name not in fields)
    assert f"requires {', '.join(missing)} " in str(caught.value)


def test_required_parameters_present_or_filled_by_a_default_pass() -> None:
    required = frozenset({"audience", "resource", "binding_message", "acr_values", "requested_expiry"})
    shaped = _shape(
        RequestDialect(required_parameters=required, default_audience=API, default_resource=(PAYMENTS,)),
        code="7Q4K",
        login_hint="alice",
        binding_message="Pay 7Q4K",
        acr_values="urn:mace:incommon:iap:silver",
        requested_expiry=120,
    )
    assert (shaped.audience, shaped.resource, shaped.requested_expiry) == (API, (PAYMENTS,), 120)


def test_all_missing_required_parameters_are_named_in_order() -> None:
    dialect = RequestDialect(required_parameters=frozenset({"resource", "audience", "binding_message"}))
    with pytest.raises(InvalidAuthenticationRequest, match=r"requires audience, binding_message, resource in every"):
        _shape(dialect, login_hint="alice")
