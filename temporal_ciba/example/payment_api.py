"""A small payment API, the resource server the example agent pays through.

It accepts a payment only with an access token that the OP, asked by token introspection
(RFC 7662), says is active, issued to the agent's client, with the `payments` scope, and
granted for exactly this payment (RFC 9396 authorization_details). It records each payment
once per Idempotency-Key (SQLite), so a retried or replayed request never pays twice.

    temporal-ciba payment-api        (settings: PAYMENT_API_* environment variables)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from temporal_ciba.ciba import json_object, require_secure_url
from temporal_ciba.ciba.discovery import fetch_provider_metadata
from temporal_ciba.example.payment import (
    AUTHORIZATION_DETAILS_TYPE,
    PaymentAction,
    action_digest,
    authorization_details,
)

MAX_BODY_BYTES = 16 * 1024


class PaymentApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_API_", extra="ignore", frozen=True)

    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    # Only tokens issued to these clients (the agents), comma-separated, may pay.
    agent_client_ids: Annotated[list[str], NoDecode] = Field(min_length=1)
    db: Path = Path("payments.sqlite3")
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    # HTTPS (PEM files); without them the API serves plain HTTP, which the worker accepts only on loopback.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, issuer: str) -> str:
        return require_secure_url(issuer, "issuer")

    @field_validator("agent_client_ids", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


class PaymentStore:
    """Payments by idempotency key, in SQLite (a primary key makes "exactly once" the database's job)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS payments (idempotency_key TEXT PRIMARY KEY, payment_id TEXT NOT NULL, "
            "action TEXT NOT NULL, sub TEXT, created_at REAL NOT NULL)"
        )
        self._lock = asyncio.Lock()

    async def record(self, key: str, action: dict[str, Any], sub: str | None) -> tuple[str, bool] | None:
        """(payment_id, duplicate), or None when the key was used for another payment."""
        text = json.dumps(action, sort_keys=True)
        async with self._lock:
            row = self._db.execute(
                "SELECT payment_id, action FROM payments WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if row is not None:
                return (row[0], True) if row[1] == text else None
            payment_id = f"pay_{uuid.uuid4().hex[:20]}"
            self._db.execute("INSERT INTO payments VALUES (?, ?, ?, ?, ?)", (key, payment_id, text, sub, time.time()))
            return payment_id, False

    def all(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT idempotency_key, payment_id, action, sub, created_at FROM payments").fetchall()
        return [
            {"idempotency_key": r[0], "payment_id": r[1], "action": json.loads(r[2]), "sub": r[3], "created_at": r[4]}
            for r in rows
        ]


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def create_app(settings: PaymentApiSettings, *, http: httpx.AsyncClient | None = None) -> Starlette:
    store = PaymentStore(settings.db)
    client = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=False)
    introspection: dict[str, str] = {}

    async def introspect(token: str) -> dict[str, Any]:
        if "endpoint" not in introspection:
            metadata = await fetch_provider_metadata(client, settings.issuer, timeout=httpx.Timeout(10.0, connect=5.0))
            if not metadata.introspection_endpoint:
                raise RuntimeError("the OP has no introspection_endpoint")
            introspection["endpoint"] = metadata.introspection_endpoint
        response = await client.post(
            introspection["endpoint"],
            data={"token": token, "token_type_hint": "access_token"},
            auth=(settings.client_id, settings.client_secret.get_secret_value()),
        )
        response.raise_for_status()
        return json_object(response, "introspection")

    async def pay(request: Request) -> JSONResponse:
        authorization = request.headers.get("authorization", "")
        if not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
            return _error(401, "invalid_token", "a bearer access token is required")
        key = request.headers.get("idempotency-key", "")
        if not 8 <= len(key) <= 200:
            return _error(400, "invalid_request", "an Idempotency-Key header of 8 to 200 characters is required")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "invalid_request", "body too large")
        try:
            document = json.loads(body)
            digest = document.pop("action_digest")
            action = PaymentAction.model_validate(document)
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError):
            return _error(400, "invalid_request", "the body must be a payment action with its action_digest")
        if digest != action_digest(action):
            return _error(400, "invalid_request", "action_digest does not match the action")
        try:
            token = await introspect(authorization[7:].strip())
        except (httpx.HTTPError, RuntimeError, ValueError):
            return _error(503, "temporarily_unavailable", "token introspection failed")
        if token.get("active") is not True:
            return _error(401, "invalid_token", "the access token is not active")
        if token.get("client_id") not in settings.agent_client_ids:
            return _error(403, "insufficient_scope", "the access token was issued to another client")
        if "payments" not in str(token.get("scope", "")).split():
            return _error(403, "insufficient_scope", "the access token lacks the payments scope")
        granted = [d for d in token.get("authorization_details") or [] if d.get("type") == AUTHORIZATION_DETAILS_TYPE]
        if granted != authorization_details(action, digest):
            return _error(403, "insufficient_authorization", "the access token was not granted for this payment")
        recorded = await store.record(key, action.model_dump(), token.get("sub"))
        if recorded is None:
            return _error(409, "conflict", "this Idempotency-Key was used for another payment")
        payment_id, duplicate = recorded
        return JSONResponse({"payment_id": payment_id, "duplicate": duplicate}, status_code=200 if duplicate else 201)

    async def list_payments(request: Request) -> JSONResponse:
        return JSONResponse(store.all())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if http is None:
            await client.aclose()

    return Starlette(
        routes=[
            Route("/payments", pay, methods=["POST"]),
            Route("/payments", list_payments, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
