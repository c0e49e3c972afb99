"""A small payment API, the resource server the example agent pays through.

It accepts a payment only with an access token that the OP, asked by token introspection
(RFC 7662), says is active, issued to the agent's client, with the `payments` scope, and
granted for exactly this payment (RFC 9396 authorization_details). An approval is a one-time
capability: the API pays once per grant, records the payment once per Idempotency-Key (SQLite),
and revokes the token at the OP (RFC 7009) as soon as it has paid.

    temporal-ciba-examples payment-api        (settings: PAYMENT_API_* environment variables)

A checklist for your own resource server (this module does each step, in this order):

1. Limit the request before you trust any of it: the body while it streams in (413 at the
   limit, never after reading it all); every malformed input (bad JSON, NaN or Infinity, numbers
   out of range, lone surrogates, invalid UTF-8, deep nesting, odd headers) is a 4xx, never a
   5xx; every field is matched whole (re.fullmatch: `$` lets a final newline through) and the
   action made canonical (`PaymentAction`), and the body's action_digest must be the digest of
   that canonical action: two spellings of one payment are one action, never two.
2. Look up the Idempotency-Key *before* introspecting. A retry of the same payment (same key,
   the same access token, compared by its SHA-256 with `hmac.compare_digest`, and the same
   action digest) gets the recorded receipt, even after the token expired or was revoked: a
   paid approval never turns into a 401 and a lost receipt. The same key and token with another
   body is 422. A token that has already paid, under any other key, is 409 before the OP is
   asked. Anything else goes on to introspection: no receipt without the grant.
3. Check the token and the action at the OP (introspection): active, issued to an agent client,
   with the scope, and its authorization_details granted for exactly this action, the action
   digest the human approved included.
4. Consume the grant once, in the same transaction that records the payment: a second payment
   under the same grant (the same token, or the same `jti` or `auth_req_id` when introspection
   names them, and, unless PAYMENT_API_ONE_PAYMENT_PER_ACTION=false, the same action digest
   for the same client) is 409, whatever Idempotency-Key it carries; the same key under another
   grant is 409, with another body 422.
5. Revoke the token at the OP's revocation endpoint (RFC 7009) once it has paid, so it opens
   nothing anywhere else either. The OP must allow the resource server to revoke the tokens
   shown to it; a refused revocation is logged, and step 4 still holds.
6. Keep no tokens: store only their SHA-256; list payments only to an operator
   (PAYMENT_API_OPERATOR_TOKEN; without it, GET /payments is off).
7. A sender-constrained token (introspection's `cnf.jkt`, RFC 9449 §6) pays only with
   `Authorization: DPoP` and a proof of that very key for this request (`htm`; `htu`, this API's
   configured PAYMENT_API_PUBLIC_URL and the path, never the caller's Host header; fresh
   `iat`, a `jti` never seen before, `ath` of this token: §4.3, §7.1); a bearer token is refused
   under the DPoP scheme. A certificate-bound token (`cnf.x5t#S256`, RFC 8705 §3) pays only over
   a TLS connection presenting that very certificate (PAYMENT_API_TLS_CLIENT_CA names the
   certificates the API asks clients for; `ClientCertificateH11Protocol` hands the presented one
   to the app).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import sqlite3
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeGuard
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from temporal_ciba.ciba import (
    PROOF_MAX_AGE_SECONDS,
    CibaError,
    InvalidDPoPProof,
    certificate_thumbprint,
    fetch_provider_metadata,
    json_object,
    require_secure_url,
    verify_proof,
)
from temporal_ciba_examples.payment_agent.models import (
    AUTHORIZATION_DETAILS_TYPE,
    PaymentAction,
    action_digest,
    authorization_details,
)

MAX_BODY_BYTES = 16 * 1024
MAX_TOKEN_CHARS = 4096
OP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
REVOCATION_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
# CIBA Core §10.3.1 names the claim carrying auth_req_id; an OP may also return it plainly.
AUTH_REQ_ID_CLAIMS = ("auth_req_id", "urn:openid:params:jwt:claim:auth_req_id")
# Matched against the whole string (re.fullmatch): `$` also matches before a final newline.
_KEY = re.compile(r"[\x20-\x7e]{8,2048}")  # visible ASCII and spaces
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1 b64token
_DIGEST = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


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
    # The URL clients reach the API at (scheme, host, port, no path): DPoP proofs must name it
    # (`htu`, RFC 9449 §4.3), never the Host header a caller sends. Unset: http(s)://HOST:PORT,
    # which a wildcard HOST cannot be (set it then, as docker-compose.yml does).
    public_url: str | None = None
    # HTTPS (PEM files); without them the API serves plain HTTP, which the worker accepts only on loopback.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # RFC 8705: the certificates (PEM) clients may present, so certificate-bound tokens can pay;
    # list a self-signed client certificate itself. Without it no certificate is asked for.
    tls_client_ca: Path | None = None
    # A bearer token for operators: GET /payments lists the payments only to its holder; unset, it is off.
    operator_token: SecretStr | None = None
    # One payment per action digest and agent client, across grants: the same payment (creditor,
    # amount, reference) approved a second time is still refused. Covers OPs that mint several
    # access tokens per grant without naming the grant in introspection.
    one_payment_per_action: bool = True

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, issuer: str) -> str:
        return require_secure_url(issuer, "issuer")

    @model_validator(mode="after")
    def _client_ca_needs_tls(self) -> PaymentApiSettings:
        if self.tls_client_ca is not None and (self.tls_cert is None or self.tls_key is None):
            raise ValueError("tls_client_ca needs tls_cert and tls_key: client certificates come only over TLS")
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("must be http(s)://HOST[:PORT], without a path")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must be http(s)://HOST[:PORT], without a query, a fragment or credentials")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _public_url_known(self) -> PaymentApiSettings:
        if self.public_url is None and self.host.strip("[]") in ("0.0.0.0", "::", ""):  # noqa: S104
            raise ValueError("public_url is required when host is a wildcard address: DPoP proofs name it")
        return self

    def base_url(self) -> str:
        """The URL clients reach the API at: PUBLIC_URL, or the address it listens on."""
        if self.public_url is not None:
            return self.public_url
        scheme = "https" if self.tls_cert is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @field_validator("agent_client_ids", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value

    @field_validator("operator_token", mode="before")
    @classmethod
    def _operator_token(cls, token: object) -> object:
        text = token.get_secret_value() if isinstance(token, SecretStr) else token
        if text == "":
            return None  # set but empty: the listing is off
        if isinstance(text, str) and len(text) < 16:
            raise ValueError("operator_token must be at least 16 characters")
        return token


def valid_idempotency_key(key: str) -> bool:
    """An Idempotency-Key: 8 to 2048 visible ASCII characters and spaces, nothing else."""
    return _KEY.fullmatch(key) is not None


def valid_access_token(token: str) -> bool:
    """An access token in RFC 6750 §2.1 b64token syntax, at most MAX_TOKEN_CHARS long."""
    return len(token) <= MAX_TOKEN_CHARS and _TOKEN.fullmatch(token) is not None


def valid_action_digest(digest: object) -> TypeGuard[str]:
    """An action digest: SHA-256 in lower-case hex, 64 characters."""
    return isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None


def token_fingerprint(token: str) -> str:
    """SHA-256 (hex) of an access token: what the API keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Payment:
    idempotency_key: str
    payment_id: str
    action_digest: str
    token_sha256: str | None


@dataclass(frozen=True)
class Recorded:
    result: Literal["paid", "duplicate", "key_reused", "paid_under_another_grant", "grant_used"]
    payment_id: str | None = None


class PaymentStore:
    """Payments by idempotency key and the grants they consumed, in SQLite.

    Primary keys make "once per key" and "once per grant" the database's job; a payment and the
    grant identifiers it consumes are written in one transaction.
    """

    COLUMNS: ClassVar[dict[str, str]] = {"action_digest": "TEXT", "client_id": "TEXT", "token_sha256": "TEXT"}

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS payments (idempotency_key TEXT PRIMARY KEY, payment_id TEXT NOT NULL, "
            "action TEXT NOT NULL, sub TEXT, created_at REAL NOT NULL)"
        )
        present = {row[1] for row in self._db.execute("PRAGMA table_info(payments)")}
        for column, kind in self.COLUMNS.items():  # databases of earlier versions
            if column not in present:
                self._db.execute(f"ALTER TABLE payments ADD COLUMN {column} {kind}")
        legacy = self._db.execute("SELECT payment_id, action FROM payments WHERE action_digest IS NULL").fetchall()
        for payment_id, text in legacy:
            try:
                digest = action_digest(PaymentAction.model_validate_json(text))
            except (ValueError, ArithmeticError):
                continue
            self._db.execute("UPDATE payments SET action_digest = ? WHERE payment_id = ?", (digest, payment_id))
        # "token:<sha256>", "jti:<client_id>:<jti>", "auth_req_id:<client_id>:<id>", "action:<client_id>:<digest>"
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS consumed_grants (grant_key TEXT PRIMARY KEY, payment_id TEXT NOT NULL)"
        )
        self._lock = asyncio.Lock()

    def consumed(self, grant_key: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM consumed_grants WHERE grant_key = ?", (grant_key,)).fetchone() is not None
        )

    def find(self, key: str) -> Payment | None:
        row = self._db.execute(
            "SELECT payment_id, action_digest, token_sha256 FROM payments WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return None if row is None else Payment(key, row[0], row[1] or "", row[2])

    async def record(
        self,
        key: str,
        action: PaymentAction,
        digest: str,
        *,
        client_id: str,
        token_sha256: str,
        grant_keys: list[str],
        sub: str | None,
    ) -> Recorded:
        async with self._lock:
            existing = self.find(key)
            if existing is not None:
                if not hmac.compare_digest(existing.action_digest, digest):
                    return Recorded("key_reused")
                # (A payment recorded before tokens were fingerprinted: the receipt, as then.)
                if existing.token_sha256 is not None and not hmac.compare_digest(existing.token_sha256, token_sha256):
                    return Recorded("paid_under_another_grant")
                return Recorded("duplicate", existing.payment_id)
            payment_id = f"pay_{uuid.uuid4().hex[:20]}"
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO consumed_grants VALUES (?, ?)", [(grant, payment_id) for grant in grant_keys]
                )
                self._db.execute(
                    "INSERT INTO payments (idempotency_key, payment_id, action, sub, created_at, action_digest, "
                    "client_id, token_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        payment_id,
                        json.dumps(action.model_dump(), sort_keys=True),
                        sub,
                        time.time(),
                        digest,
                        client_id,
                        token_sha256,
                    ),
                )
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                return Recorded("grant_used")
            self._db.execute("COMMIT")
            return Recorded("paid", payment_id)

    def all(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT idempotency_key, payment_id, action, sub, created_at, action_digest, client_id FROM payments"
        ).fetchall()
        return [
            {
                "idempotency_key": r[0],
                "payment_id": r[1],
                "action": json.loads(r[2]),
                "sub": r[3],
                "created_at": r[4],
                "action_digest": r[5],
                "client_id": r[6],
            }
            for r in rows
        ]


class BadRequest(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.response = _error(status, error, description)


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read chunk by chunk and refused (413) the moment it passes `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "invalid_request", "body too large")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BadRequest(413, "invalid_request", "body too large")
    except ClientDisconnect:
        raise BadRequest(400, "invalid_request", "the client went away") from None
    return bytes(body)


def parse_payment(body: bytes) -> tuple[PaymentAction, str]:
    """The action and its digest from a body; 400 for anything that is not exactly that."""
    try:
        # Strict UTF-8 (json.loads would guess UTF-16 or UTF-32), no NaN or Infinity; numbers out
        # of range, deep nesting and lone surrogates are errors here too, never a 500.
        document = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        if not isinstance(document, dict):
            raise ValueError("not an object")
        digest = document.pop("action_digest")
        if not valid_action_digest(digest):
            raise ValueError("action_digest is not a SHA-256 hex digest")
        action = PaymentAction.model_validate(document)
        expected = action_digest(action)  # UnicodeEncodeError for a lone surrogate
    except (ValueError, KeyError, TypeError, ArithmeticError, RecursionError, ValidationError):
        raise BadRequest(400, "invalid_request", "the body must be a payment action with its action_digest") from None
    if not hmac.compare_digest(digest, expected):
        raise BadRequest(400, "invalid_request", "action_digest does not match the action")
    return action, digest


class SeenProofs:
    """RFC 9449 §11.1: the jti of every DPoP proof accepted within its time window, so none is
    accepted twice (in memory: a proof older than the window is refused by its iat anyway)."""

    def __init__(self, window: float = 2 * PROOF_MAX_AGE_SECONDS + 10) -> None:
        self._window = window
        self._seen: dict[str, float] = {}

    def first_use(self, jkt: str, jti: str, now: float) -> bool:
        self._seen = {key: at for key, at in self._seen.items() if now - at < self._window}
        key = f"{jkt}:{jti}"
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


class ClientCertificateH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, handing the client certificate of the TLS connection to the
    app as the ASGI TLS extension does (`scope["extensions"]["tls"]["client_cert_chain"]`, PEM),
    which uvicorn itself does not. The certificate was verified in the handshake against the CA
    file uvicorn was given (`ssl_ca_certs`, `ssl_cert_reqs=CERT_OPTIONAL`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app = with_client_certificate(self.app, ssl.DER_cert_to_PEM_cert(der))


def with_client_certificate(app: ASGIApp, pem: str) -> ASGIApp:
    """`app`, told on every request that the connection presented the certificate `pem`."""

    async def with_certificate(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = {**extensions.get("tls", {}), "client_cert_chain": [pem], "client_cert_error": None}
        await app({**scope, "extensions": extensions}, receive, send)

    return with_certificate


def presented_certificate_thumbprint(request: Request) -> str | None:
    """RFC 8705 §3.1: x5t#S256 of the client certificate this request's connection presented."""
    chain = (request.scope.get("extensions") or {}).get("tls", {}).get("client_cert_chain")
    if not chain:
        return None
    return certificate_thumbprint(ssl.PEM_cert_to_DER_cert(chain[0]))


def _confirms(bound: object, presented: str | None) -> bool:
    """A token's confirmation member (`cnf.jkt`, `cnf.x5t#S256`) names what this request presented.
    Compared as bytes: hmac.compare_digest raises on a str that is not ASCII, which the OP's
    answer may hold."""
    if not isinstance(bound, str) or not presented:
        return False
    return hmac.compare_digest(bound.encode(), presented.encode())


def _dpop_error(description: str) -> JSONResponse:
    return _error(401, "invalid_dpop_proof", description, {"www-authenticate": 'DPoP error="invalid_dpop_proof"'})


def _receipt(payment_id: str, duplicate: bool) -> JSONResponse:
    return JSONResponse({"payment_id": payment_id, "duplicate": duplicate}, status_code=200 if duplicate else 201)


def create_app(settings: PaymentApiSettings, *, http: httpx.AsyncClient | None = None) -> Starlette:
    store = PaymentStore(settings.db)
    seen_proofs = SeenProofs()
    public_base = settings.base_url()
    client = http or httpx.AsyncClient(timeout=OP_TIMEOUT, follow_redirects=False)
    endpoints: dict[str, str | None] = {}
    credentials = (settings.client_id, settings.client_secret.get_secret_value())

    async def endpoint(name: Literal["introspection", "revocation"]) -> str | None:
        if not endpoints:
            metadata = await fetch_provider_metadata(client, settings.issuer, timeout=OP_TIMEOUT)
            if not metadata.introspection_endpoint:
                raise RuntimeError("the OP has no introspection_endpoint")
            endpoints["introspection"] = metadata.introspection_endpoint
            endpoints["revocation"] = metadata.revocation_endpoint
            if not metadata.revocation_endpoint:
                log.warning("the OP has no revocation_endpoint: tokens stay active after they paid")
        return endpoints[name]

    async def introspect(token: str) -> dict[str, Any]:
        url = await endpoint("introspection")
        assert url is not None
        response = await client.post(
            url, data={"token": token, "token_type_hint": "access_token"}, auth=credentials, timeout=OP_TIMEOUT
        )
        response.raise_for_status()
        return json_object(response, "introspection")

    async def revoke(token: str) -> None:
        """RFC 7009: the grant is used up; the OP should no longer honour its token anywhere."""
        try:
            url = await endpoint("revocation")
            if url is None:
                return
            response = await client.post(
                url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=credentials,
                timeout=REVOCATION_TIMEOUT,
            )
        except (httpx.HTTPError, CibaError, RuntimeError) as exc:
            log.warning("revoking a used access token failed: %s", type(exc).__name__)
            return
        if response.status_code != 200:
            log.warning("the OP refused to revoke a used access token: HTTP %d", response.status_code)

    def grant_keys(token: dict[str, Any], fingerprint: str, client_id: str, digest: str) -> list[str]:
        """What names the grant behind a token: the token itself, and what introspection tells."""
        keys = [f"token:{fingerprint}"]
        jti = token.get("jti")
        if isinstance(jti, str) and jti:
            keys.append(f"jti:{client_id}:{jti}")
        for claim in AUTH_REQ_ID_CLAIMS:
            value = token.get(claim)
            if isinstance(value, str) and value and f"auth_req_id:{client_id}:{value}" not in keys:
                keys.append(f"auth_req_id:{client_id}:{value}")
        if settings.one_payment_per_action:
            keys.append(f"action:{client_id}:{digest}")
        return keys

    def proven_key(request: Request, access_token: str) -> str | JSONResponse:
        """RFC 9449 §4.3, §7.1: the thumbprint of the key whose proof came with this request."""
        proofs = request.headers.getlist("dpop")
        if len(proofs) != 1:
            return _dpop_error("exactly one DPoP header is required with the DPoP scheme")
        now = time.time()
        try:
            jkt, jti = verify_proof(
                proofs[0],
                htm=request.method,
                # The configured URL, never one built from the caller's Host or X-Forwarded-Proto:
                # a proof made for another server is refused here (RFC 9449 §4.3).
                htu=public_base + request.url.path,
                access_token=access_token,
                now=now,
            )
        except InvalidDPoPProof as exc:
            return _dpop_error(str(exc))
        if not seen_proofs.first_use(jkt, jti, now):
            return _dpop_error("this DPoP proof was used before (jti)")
        return jkt

    async def pay(request: Request) -> JSONResponse:
        authorization = request.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        access_token = credentials.strip() if scheme in ("bearer", "dpop") else ""
        if not access_token or not valid_access_token(access_token):
            return _error(
                401,
                "invalid_token",
                "a bearer or DPoP access token is required",
                {"www-authenticate": 'Bearer realm="payments", DPoP algs="ES256 PS256"'},
            )
        proven_jkt: str | None = None
        if scheme == "dpop":
            proven = proven_key(request, access_token)
            if isinstance(proven, JSONResponse):
                return proven
            proven_jkt = proven
        key = request.headers.get("idempotency-key", "")
        if not valid_idempotency_key(key):
            return _error(
                400, "invalid_request", "an Idempotency-Key header of 8 to 2048 printable ASCII characters is required"
            )
        try:
            action, digest = parse_payment(await read_body(request))
        except BadRequest as refused:
            return refused.response
        fingerprint = token_fingerprint(access_token)

        def already_paid() -> JSONResponse | None:
            """What this token has paid already, answered without asking the OP, whatever the token's
            state there now (revoked after paying, or expired since)."""
            recorded = store.find(key)
            if recorded is not None and recorded.token_sha256 is not None:
                if hmac.compare_digest(recorded.token_sha256, fingerprint):
                    if not hmac.compare_digest(recorded.action_digest, digest):
                        return _error(
                            422, "idempotency_key_reused", "this Idempotency-Key was used for another payment"
                        )
                    return _receipt(recorded.payment_id, duplicate=True)  # a retry: the recorded receipt
            if store.consumed(f"token:{fingerprint}"):  # this very token, under another key
                return _error(409, "grant_already_used", "this approval has already been used for a payment")
            return None

        if (answer := already_paid()) is not None:
            return answer
        try:
            token = await introspect(access_token)
        except (httpx.HTTPError, CibaError, RuntimeError, ValueError):
            return _error(503, "temporarily_unavailable", "token introspection failed")
        if token.get("active") is not True:
            # A retry racing its first attempt may find the token revoked by that attempt just now.
            return already_paid() or _error(401, "invalid_token", "the access token is not active")
        cnf = token.get("cnf")
        bound_jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if bound_jkt is not None or proven_jkt is not None:
            # RFC 9449 §7.1: a bound token only with a proof of its key; the DPoP scheme only for one.
            if not _confirms(bound_jkt, proven_jkt):
                return _error(
                    401,
                    "invalid_token",
                    "the access token is bound to another DPoP key, or to none",
                    {"www-authenticate": 'DPoP error="invalid_token"'},
                )
        bound_x5t = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if bound_x5t is not None:
            # RFC 8705 §3: a certificate-bound token only over a connection presenting that certificate.
            presented = presented_certificate_thumbprint(request)
            if not _confirms(bound_x5t, presented):
                return _error(
                    401,
                    "invalid_token",
                    "the access token is bound to a client certificate this connection did not present",
                    {"www-authenticate": 'Bearer error="invalid_token"'},
                )
        client_id = token.get("client_id")
        if not isinstance(client_id, str) or client_id not in settings.agent_client_ids:
            return _error(403, "insufficient_scope", "the access token was issued to another client")
        scope = token.get("scope")
        if not isinstance(scope, str) or "payments" not in scope.split():
            return _error(403, "insufficient_scope", "the access token lacks the payments scope")
        details = token.get("authorization_details")
        granted = [
            d
            for d in (details if isinstance(details, list) else [])
            if isinstance(d, dict) and d.get("type") == AUTHORIZATION_DETAILS_TYPE
        ]
        if granted != authorization_details(action, digest):
            return _error(403, "insufficient_authorization", "the access token was not granted for this payment")
        sub = token.get("sub")
        outcome = await store.record(
            key,
            action,
            digest,
            client_id=client_id,
            token_sha256=fingerprint,
            grant_keys=grant_keys(token, fingerprint, client_id, digest),
            sub=sub if isinstance(sub, str) else None,
        )
        if outcome.result == "key_reused":
            return _error(422, "idempotency_key_reused", "this Idempotency-Key was used for another payment")
        if outcome.result == "paid_under_another_grant":
            return _error(409, "grant_mismatch", "this payment was made under another grant")
        if outcome.result == "grant_used":
            return _error(409, "grant_already_used", "this approval has already been used for a payment")
        assert outcome.payment_id is not None
        if outcome.result == "paid":
            await revoke(access_token)
        return _receipt(outcome.payment_id, duplicate=outcome.result == "duplicate")

    async def list_payments(request: Request) -> JSONResponse:
        if settings.operator_token is None:
            return _error(404, "not_found", "listing payments is off (no PAYMENT_API_OPERATOR_TOKEN)")
        authorization = request.headers.get("authorization", "")
        presented = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        expected = settings.operator_token.get_secret_value()
        if not hmac.compare_digest(token_fingerprint(presented), token_fingerprint(expected)):
            return _error(
                401, "invalid_token", "an operator token is required", {"www-authenticate": 'Bearer realm="operator"'}
            )
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
