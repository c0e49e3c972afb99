"""The demo OP's admin routes approve requests and its test routes list every access token it issued.

None of them may answer anyone who reaches an OP not configured for them (what docker-compose
publishes, and where, tests/deploy/test_compose.py checks).

The real OP (examples/demo/op/server.mjs), started as configured: without
"adminRoutes" its approver page and admin routes answer 404 and a request stays pending; with
it (the demo, docker-compose) they approve and deny, but the routes that hand out tokens and
plan faults stay off unless "testRoutes" (tests only) turns them on too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.op import CIBA_GRANT, TestOP, ciba_client, run_test_op

CLIENT = "admin-check-agent"
SECRET = "a-client-secret-of-some-length-0123456789"
AUTH = (CLIENT, SECRET)
BASE_CONFIG: dict[str, Any] = {
    "clients": [ciba_client(CLIENT, client_secret=SECRET, token_endpoint_auth_method="client_secret_basic")],
    "accounts": {"alice": {"email": "alice@example.com"}},
}


def ask(op: TestOP) -> str:
    """A real CIBA request for alice, as a client sends it; its auth_req_id."""
    response = httpx.post(
        op.issuer + "/backchannel",
        data={"scope": "openid", "login_hint": "alice", "binding_message": "pay 42 EUR"},
        auth=AUTH,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["auth_req_id"])


def token(op: TestOP, auth_req_id: str) -> httpx.Response:
    return httpx.post(op.issuer + "/token", data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}, auth=AUTH)


def admin_calls(auth_req_id: str) -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    return {
        "approve": ("POST", f"/admin/requests/{auth_req_id}/approve", {}),
        "approve as another account": ("POST", f"/admin/requests/{auth_req_id}/approve", {"as_account": "mallory"}),
        "deny": ("POST", f"/admin/requests/{auth_req_id}/deny", {}),
        "list requests": ("GET", "/admin/requests", None),
        "list pending requests": ("GET", "/admin/requests?status=pending", None),
        "list token requests": ("GET", "/admin/token-requests", None),
        "list pings": ("GET", "/admin/pings", None),
        "list issued tokens": ("GET", "/admin/issued", None),
        "plan faults": ("POST", "/admin/faults", {"faults": [{"type": "approve_at_once"}]}),
        "approver page": ("GET", "/approver", None),
    }


def call(op: TestOP, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
    return httpx.request(method, op.issuer + path, json=body, timeout=10.0)


@pytest.fixture(scope="module")
def unconfigured_op() -> Iterator[TestOP]:
    """The OP as its config leaves it: no adminRoutes, no testRoutes."""
    with run_test_op(BASE_CONFIG, test_routes=False) as op:
        yield op


@pytest.mark.parametrize("call_name", sorted(admin_calls("x")))
def test_without_the_flag_every_admin_route_is_404(unconfigured_op: TestOP, call_name: str) -> None:
    auth_req_id = ask(unconfigured_op)
    method, path, body = admin_calls(auth_req_id)[call_name]
    response = call(unconfigured_op, method, path, body)
    assert response.status_code == 404, (call_name, response.status_code, response.text)
    assert auth_req_id not in response.text
    # Nothing was decided: the client is still told to wait.
    pending = token(unconfigured_op, auth_req_id)
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending", pending.text


def test_without_the_flag_the_op_announces_no_admin_routes(unconfigured_op: TestOP) -> None:
    ask(unconfigured_op)
    assert "routes on" not in unconfigured_op.log_path.read_text()


@pytest.mark.parametrize("value", ["true", 1, "yes", {"enabled": True}])
def test_only_the_literal_true_turns_them_on(value: object) -> None:
    with run_test_op({**BASE_CONFIG, "adminRoutes": value, "testRoutes": value}, test_routes=False) as op:
        auth_req_id = ask(op)
        for name, (method, path, body) in admin_calls(auth_req_id).items():
            assert call(op, method, path, body).status_code == 404, (value, name)


def test_with_admin_routes_the_demo_approves_but_lists_no_token() -> None:
    """The demo's and docker-compose's setting: the approver page plays the phone."""
    with run_test_op({**BASE_CONFIG, "adminRoutes": True}, test_routes=False) as op:
        assert call(op, "GET", "/approver", None).status_code == 200
        approved, denied = ask(op), ask(op)
        pending = call(op, "GET", "/admin/requests?status=pending", None)
        assert pending.status_code == 200 and {approved, denied} <= {r["auth_req_id"] for r in pending.json()}
        assert call(op, "POST", f"/admin/requests/{approved}/approve", {}).json()["status"] == "approved"
        assert call(op, "POST", f"/admin/requests/{denied}/deny", {}).json()["status"] == "denied"
        tokens = token(op, approved)
        assert tokens.status_code == 200 and tokens.json()["access_token"], tokens.text
        assert token(op, denied).json()["error"] == "access_denied"
        assert call(op, "GET", "/admin/token-requests", None).status_code == 200
        assert call(op, "GET", "/admin/pings", None).status_code == 200
        # The test-only routes: no token list, no planned faults (a replayed token response).
        issued = call(op, "GET", "/admin/issued", None)
        assert issued.status_code == 404 and tokens.json()["access_token"] not in issued.text
        assert call(op, "POST", "/admin/faults", {"faults": [{"type": "approve_at_once"}]}).status_code == 404
        assert "admin routes on" in op.log_path.read_text()


def test_with_test_routes_the_issued_tokens_are_listed() -> None:
    """What the test suite turns on (tests.support.op.TEST_ROUTES) to prove no token leaks."""
    with run_test_op(BASE_CONFIG) as op:
        auth_req_id = ask(op)
        op.approve(auth_req_id)
        tokens = token(op, auth_req_id).json()
        assert op.issued()[auth_req_id]["access_token"] == tokens["access_token"]
        op.set_faults()
        assert "test routes on" in op.log_path.read_text()
