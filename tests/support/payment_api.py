"""The example payment API in the test process: its app over ASGI, its OP a crafted double.

`CraftedOP` answers discovery, token introspection (RFC 7662) and revocation (RFC 7009) from
what a test tells it, and records what the API asked; `payment_api` runs `create_app` behind
`httpx.ASGITransport` with that OP behind `httpx.MockTransport`, so mutmut sees every call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from temporal_ciba_examples.payment_agent.models import PaymentAction, action_digest, authorization_details
from temporal_ciba_examples.payment_agent.payment_api import PaymentApiSettings, create_app

ISSUER = "https://op.example"
API = "http://api"
API_CLIENT = "payment-api"
API_SECRET = "a-client-secret-of-some-length-0123456789"
AGENT = "agent-app"
OPERATOR = "operator-token-0123456789abcdef"
INVOICE = PaymentAction(
    amount="120.00",
    currency="EUR",
    creditor_name="ACME GmbH",
    creditor_iban="DE02 1001 0010 9307 1186 03",
    reference="INV-2026-118",
)


def body_of(action: PaymentAction, **overrides: Any) -> dict[str, Any]:
    """A payment request's body: the action and its digest."""
    return {**action.model_dump(), "action_digest": action_digest(action), **overrides}


def granted(action: PaymentAction = INVOICE, **claims: Any) -> dict[str, Any]:
    """What introspection says of an active token granted to the agent for `action`."""
    return {
        "active": True,
        "client_id": AGENT,
        "scope": "openid payments",
        "sub": "alice",
        "authorization_details": authorization_details(action, action_digest(action)),
        **claims,
    }


def api_settings(tmp_path: Path, **overrides: Any) -> PaymentApiSettings:
    """The payment API's settings, its OP the crafted one, reached at API."""
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": API_CLIENT,
        "client_secret": API_SECRET,
        "agent_client_ids": [AGENT],
        "db": tmp_path / "payments.sqlite3",
        "public_url": API,
        "operator_token": OPERATOR,
    }
    return PaymentApiSettings(**{**values, **overrides})


@dataclass
class CraftedOP:
    """An OP answering from `tokens` (a token's introspection answer; unknown: inactive).

    `metadata` overrides discovery's fields (None removes one); `introspection` and
    `revocation`, when set, answer those endpoints instead. It records the tokens introspected
    and revoked, with the client credentials each request carried."""

    tokens: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    introspection: httpx.Response | Exception | None = None
    revocation: httpx.Response | Exception | None = None
    introspected: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    forms: list[dict[str, list[str]]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    discoveries: int = 0
    # The timeout each request carried (httpx's request extension), by endpoint path.
    timeouts: dict[str, list[dict[str, float | None]]] = field(default_factory=dict)
    hold: asyncio.Event | None = None
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.setdefault(request.url.path, []).append(request.extensions.get("timeout", {}))
        if request.url.path == "/.well-known/openid-configuration":
            self.discoveries += 1
            document = {
                "issuer": ISSUER,
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
                "introspection_endpoint": f"{ISSUER}/introspect",
                "revocation_endpoint": f"{ISSUER}/revoke",
                **self.metadata,
            }
            return httpx.Response(200, json={k: v for k, v in document.items() if v is not None})
        form = parse_qs(request.content.decode())
        self.forms.append(form)
        self.authorizations.append(request.headers.get("authorization", ""))
        token = form.get("token", [""])[0]
        if request.url.path == "/revoke":
            self.revoked.append(token)
            return self._answer(self.revocation, httpx.Response(200))
        assert request.url.path == "/introspect", request.url
        self.introspected.append(token)
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.holding.set()
            await hold.wait()
        answer = self.tokens.get(token) if token not in self.revoked else None
        return self._answer(self.introspection, httpx.Response(200, json=answer or {"active": False}))

    @staticmethod
    def _answer(configured: httpx.Response | Exception | None, default: httpx.Response) -> httpx.Response:
        if isinstance(configured, Exception):
            raise configured
        return configured or default


@asynccontextmanager
async def payment_api(
    settings: PaymentApiSettings, op: CraftedOP, *, wrap: Any = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app `create_app(settings)` in this process, its OP `op`.

    `wrap`, when given, wraps the ASGI app (with_client_certificate, a recorder)."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(op)) as http:
        app = create_app(settings, http=http)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=wrap(app) if wrap else app), base_url=API
        ) as client:
            yield client
