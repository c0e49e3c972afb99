"""A remote codec server, so the Temporal UI and CLI can show payloads to an operator.

It serves an operator who holds the key, over Temporal's remote codec protocol: POST /decode,
and /encode when enabled, with `{"payloads": [...]}`.

    temporal-ciba codec-server     (CIBA_PAYLOAD_KEY, CIBA_CODEC_*; point the UI's codec endpoint here)

It decrypts history for whoever calls it, so it is not an oracle for anyone who can reach it:

- every call carries `Authorization: Bearer ...`: an operator token (CIBA_CODEC_OPERATOR_TOKENS;
  `temporal --codec-auth "Bearer TOKEN"`) or an access token (JWT) of the configured OIDC issuer
  and audience (the Temporal UI's "pass access token", which it sends only to an https endpoint);
  or, from one of the UI's origins, the session cookie of an operator who signed in through the
  browser (codec_signin: OpenID Connect code flow with PKCE; the UI's "include credentials");
- the Host header must name this server (a DNS-rebinding page has its own host name), and a
  browser's Origin must be one of the UI's origins (CORS preflights need no token);
- /encode, which makes ciphertext the worker accepts, is off unless CIBA_CODEC_ALLOW_ENCODE
  (an empty list is answered, empty: nothing to forge, and the CLI encodes even no input);
- bodies are cut off at the limit while they stream in; bad input gets a one-line JSON 4xx;
- slow clients cannot pin it, as they cannot pin the callback service (http_guard, served by
  `temporal-ciba codec-server`): a request head must arrive within CIBA_CODEC_READ_TIMEOUT of
  the connection (or of the previous response), a body within it of its head (408), and at most
  CIBA_CODEC_MAX_CONNECTIONS connections are open (503 beyond).

It listens on loopback by default. Tokens stay sealed even in decoded payloads
(temporal_ciba.crypto._sealing); only the activities open them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpx
import jwt
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from temporal_ciba._programs.codec_server_settings import ACCESS_TOKEN_TYPE, CodecServerSettings, normal_token_type
from temporal_ciba._programs.codec_signin import MAX_QUERY_CHARS, BrowserSignIn, OperatorRule, SignInRefused
from temporal_ciba._programs.http_guard import DEFAULT_READ_TIMEOUT, BodyDeadline
from temporal_ciba.ciba import CibaError, JwksCache, fetch_jwks, fetch_provider_metadata, select_keys
from temporal_ciba.crypto import AesGcmCodec, PayloadDecryptionError

MAX_BODY_BYTES = 4 * 1024 * 1024
# A bearer token longer than this is not one we issued or trust; refuse it before parsing.
MAX_TOKEN_CHARS = 16 * 1024
REALM = 'Bearer realm="temporal-ciba codec server"'

log = logging.getLogger("temporal_ciba.codec_server")


class Refused(Exception):
    """A call the server refuses: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _late_body(seconds: float) -> Response:
    return _error(408, f"the body did not arrive within {seconds:g} s")


def _unauthorized(reason: str) -> Refused:
    return Refused(401, reason, {"www-authenticate": f'{REALM}, error="invalid_token"'})


# Authentication ---------------------------------------------------------------------------------


class OperatorTokens:
    """Static bearer tokens; only their SHA-256 digests are kept, compared in constant time."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(token.encode()).digest() for token in tokens]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"OperatorTokens({len(self._digests)} tokens)"

    def matches(self, token: str) -> bool:
        presented = hashlib.sha256(token.encode()).digest()
        found = False
        for digest in self._digests:  # no early exit: the time does not say which token matched
            found |= hmac.compare_digest(presented, digest)
        return found


class IssuerUnavailable(Exception):
    """The OIDC issuer's discovery document or keys could not be loaded."""


class OidcAccessTokens:
    """Bearer access tokens that are JWTs signed by `issuer`.

    Keys come from its discovery document's jwks_uri; a token must be for one of `audiences`
    and unexpired; RSA or EC signatures only. It must be an access token: its `typ` header one of
    `token_types` (RFC 9068's at+jwt by default), and, where configured, holding `required_claim`.
    An ID token of the issuer for the same audience (a client id, as with Keycloak) is refused:
    ID tokens travel further than access tokens (decision-record exports hold them)."""

    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        *,
        algorithms: Sequence[str] = ("RS256", "PS256", "ES256"),
        required_scope: str | None = None,
        token_types: Sequence[str] = (ACCESS_TOKEN_TYPE,),
        required_claim: tuple[str, str] | None = None,
        leeway_seconds: int = 60,
        timeout: httpx.Timeout = httpx.Timeout(10.0, connect=5.0),  # noqa: B008 (immutable)
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not audiences:
            raise ValueError("an audience is required")
        self.issuer = issuer
        self.audiences = list(audiences)
        self.algorithms = tuple(algorithms)
        self.required_scope = required_scope
        self.token_types = frozenset(normal_token_type(kind) for kind in token_types)
        self.required_claim = required_claim
        self.leeway_seconds = leeway_seconds
        self._timeout = timeout
        self._transport = transport
        self._jwks_uri: str | None = None
        self._jwks = JwksCache(self._fetch_jwks)

    def __repr__(self) -> str:
        return f"OidcAccessTokens(issuer={self.issuer!r}, audiences={self.audiences!r})"

    async def _fetch_jwks(self) -> dict[str, Any]:
        # Redirects are never followed; every request has explicit timeouts.
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, transport=self._transport) as http:
            if self._jwks_uri is None:
                self._jwks_uri = (await fetch_provider_metadata(http, self.issuer, timeout=self._timeout)).jwks_uri
            return await fetch_jwks(http, self._jwks_uri, timeout=self._timeout)

    async def _keys(self, *, refresh: bool) -> list[Any]:
        try:
            if refresh:
                await self._jwks.refresh()
            return await self._jwks.keys()
        except CibaError as exc:
            log.warning("codec server: the OIDC issuer's keys could not be loaded: %s", exc)
            raise IssuerUnavailable(str(exc)) from None

    async def validate(self, token: str) -> dict[str, Any]:
        """The token's claims; Refused(401) for any token we do not accept."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("the bearer token is not a valid JWT") from None
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if not isinstance(typ, str) or normal_token_type(typ) not in self.token_types:
            # An ID token (typ JWT, or none) for our audience is not an access token (RFC 9068 §4).
            raise _unauthorized(f"the token is not an access token (typ {' or '.join(sorted(self.token_types))})")
        if alg not in self.algorithms:
            raise _unauthorized(f"the token's algorithm is not one of {', '.join(self.algorithms)}")
        if kid is not None and not isinstance(kid, str):
            raise _unauthorized("the token's kid is not a string")
        candidates = select_keys(await self._keys(refresh=False), alg=alg, kid=kid)
        if not candidates:
            # A key rotated in since we fetched (JwksCache refetches at most every 30 s).
            candidates = select_keys(await self._keys(refresh=True), alg=alg, kid=kid)
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self.audiences,
                    issuer=self.issuer,
                    leeway=self.leeway_seconds,
                    options={"require": ["iss", "aud", "exp"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise _unauthorized(f"the token was refused: {exc}") from None
            self._check_scope(claims)
            self._check_claim(claims)
            return claims
        raise _unauthorized("the token's signature does not verify with the issuer's keys")

    def _check_claim(self, claims: dict[str, Any]) -> None:
        if self.required_claim is None:
            return
        name, value = self.required_claim
        if claims.get(name) != value:
            raise _unauthorized(f"the token is not an access token (its {name} claim is not {value!r})")

    def _check_scope(self, claims: dict[str, Any]) -> None:
        if self.required_scope is None:
            return
        granted = claims.get("scope", claims.get("scp", ""))
        scopes = granted.split() if isinstance(granted, str) else granted if isinstance(granted, list) else []
        if self.required_scope not in scopes:
            raise Refused(403, f"the token lacks the scope {self.required_scope!r}")


class CodecAuth:
    """Who may call the codec server: operator tokens, OIDC access tokens, signed-in browsers."""

    def __init__(
        self,
        operator_tokens: Iterable[str] = (),
        oidc: OidcAccessTokens | None = None,
        signin: BrowserSignIn | None = None,
        *,
        browser_origins: Sequence[str] = (),
    ) -> None:
        self.operator_tokens = OperatorTokens(operator_tokens)
        self.oidc = oidc
        self.signin = signin
        self.browser_origins = frozenset(browser_origins)
        if not self.operator_tokens and oidc is None and signin is None:
            raise ValueError("the codec server needs operator tokens, an OIDC issuer or a sign-in to authenticate")

    async def authenticate(self, request: Request) -> str:
        """Who called (for the log), or Refused(401/403)."""
        authorization = request.headers.get("authorization")
        if authorization is None:
            if self.signin is not None:
                return self._session(request)
            raise _unauthorized("an Authorization: Bearer token is required")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("an Authorization: Bearer token is required")
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized("the bearer token is too long")
        if self.operator_tokens.matches(token):
            return "operator token"
        if self.oidc is not None and token.count(".") == 2:
            claims = await self.oidc.validate(token)
            return f"sub={claims.get('sub')!r}"
        raise _unauthorized("the bearer token is not valid here")

    def _session(self, request: Request) -> str:
        """A signed-in browser's session; only from one of the UI's origins (a cookie is sent by
        the browser whoever made the page, so a request without the UI's Origin is not the UI's)."""
        assert self.signin is not None
        session = self.signin.session(request)
        if session is None:
            raise _unauthorized("an Authorization: Bearer token or a sign-in (GET /login) is required")
        if request.headers.get("origin") not in self.browser_origins:
            raise _unauthorized("a session is accepted only from the Temporal UI's origin")
        return f"session of sub={session.sub!r}"


# Host and Origin --------------------------------------------------------------------------------


def host_name(host_header: str) -> str:
    """The name in a Host header, lowercase, without port or brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if ":" in host else host


class HostAndOriginGuard:
    """Refuses a request from the wrong Host or Origin, before CORS or anything else looks at it.

    A Host that is not ours is a 421 (DNS rebinding); an Origin that is not one of the UI's is a
    403 (another site's page)."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = frozenset(host.lower().strip("[]").rstrip(".") for host in allowed_hosts)
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"host"]
        origins = [value.decode("latin-1") for name, value in scope["headers"] if name == b"origin"]
        if len(hosts) != 1 or host_name(hosts[0]).rstrip(".") not in self.allowed_hosts:
            response: Response = _error(421, "this server does not answer to that Host")
        elif any(origin not in self.allowed_origins for origin in origins):
            response = _error(403, "this origin may not call the codec server")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


# The app ----------------------------------------------------------------------------------------


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it is longer than `max_bytes`: never read whole first."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Refused(400, "bad Content-Length")
        if int(declared) > max_bytes:
            raise Refused(413, f"the body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise Refused(413, f"the body is larger than {max_bytes} bytes")
    return bytes(body)


def parse_payloads(body: bytes) -> Payloads:
    payloads = Payloads()
    try:
        json_format.Parse(body, payloads)
    except (json_format.ParseError, UnicodeDecodeError):
        raise Refused(400, 'the body must be {"payloads": [...]} in protobuf JSON') from None
    return payloads


def create_codec_app(
    codec: PayloadCodec,
    *,
    auth: CodecAuth,
    cors_origins: Sequence[str],
    allowed_hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    allow_encode: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> Starlette:
    async def convert(request: Request, decode: bool) -> Response:
        try:
            caller = await auth.authenticate(request)
            payloads = parse_payloads(await read_limited(request, max_body_bytes))
            # An empty list makes no ciphertext: answered even with encoding off (the CLI's
            # `workflow query` and `workflow metadata` encode their empty input).
            if not decode and not allow_encode and payloads.payloads:
                raise Refused(403, "encoding is off on this server (CIBA_CODEC_ALLOW_ENCODE)")
            try:
                converted = await (codec.decode if decode else codec.encode)(payloads.payloads)
                answer = {"payloads": [], **json_format.MessageToDict(Payloads(payloads=converted))}
            except PayloadDecryptionError as exc:
                raise Refused(400, str(exc)) from None
        except IssuerUnavailable:
            return _error(503, "the OIDC issuer's keys could not be loaded; try again later")
        except Refused as refused:
            if refused.status in (401, 403):
                log.info("codec server refused %s %s: %s", request.method, request.url.path, refused)
            return _error(refused.status, str(refused), refused.headers)
        log.info("codec server: %s of %d payloads for %s", request.url.path, len(converted), caller)
        return JSONResponse(answer)

    async def decode(request: Request) -> Response:
        return await convert(request, decode=True)

    async def encode(request: Request) -> Response:
        return await convert(request, decode=False)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    routes = [Route("/decode", decode, methods=["POST"]), Route("/encode", encode, methods=["POST"])]
    guarded_origins = list(cors_origins)
    signin = auth.signin
    if signin is not None:
        routes += [
            Route("/", _signin_step(signin.home), methods=["GET"]),
            Route("/login", _signin_step(signin.login), methods=["GET"]),
            Route("/callback", _signin_step(signin.callback), methods=["GET"]),
            Route("/logout", _signin_step(signin.logout), methods=["POST"]),
        ]
        # Its own page posts /logout; it is not a CORS origin (it never reads a decoded payload).
        guarded_origins.append(signin.origin)
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        middleware=[
            # The body within `read_timeout` of its head (the head's own deadline is GuardedH11Protocol's).
            Middleware(BodyDeadline, seconds=read_timeout, answer=_late_body),
            Middleware(HostAndOriginGuard, allowed_hosts=allowed_hosts, allowed_origins=guarded_origins),
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["POST"],
                allow_headers=["content-type", "x-namespace", "authorization"],
                allow_credentials=True,
                max_age=600,
            ),
        ],
    )


def _signin_step(step: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A sign-in route: an overlong query string is 414 before it is parsed; a refusal is one JSON line."""

    async def route(request: Request) -> Response:
        if len(request.scope.get("query_string", b"")) > MAX_QUERY_CHARS:
            return _error(414, f"the query string is longer than {MAX_QUERY_CHARS} characters")
        try:
            return await step(request)
        except SignInRefused as refused:
            log.info("codec server refused %s %s: %s", request.method, request.url.path, refused)
            return _error(refused.status, str(refused), {"cache-control": "no-store"})

    return route


def codec_app_from_settings(settings: CodecServerSettings) -> Starlette:
    oidc = None
    if settings.codec_oidc_issuer is not None and settings.codec_oidc_audience:
        timeout = settings.codec_oidc_http_timeout
        oidc = OidcAccessTokens(
            settings.codec_oidc_issuer,
            settings.codec_oidc_audience,
            algorithms=settings.codec_oidc_algs,
            required_scope=settings.codec_oidc_required_scope,
            token_types=settings.codec_oidc_token_types,
            required_claim=settings.token_claim(),
            leeway_seconds=settings.codec_clock_leeway,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        )
    signin = None
    if settings.codec_signin_client_id is not None:
        assert settings.codec_oidc_issuer is not None and settings.codec_public_url is not None
        secret = settings.codec_signin_client_secret
        timeout = settings.codec_oidc_http_timeout
        signin = BrowserSignIn(
            issuer=settings.codec_oidc_issuer,
            client_id=settings.codec_signin_client_id,
            client_secret=secret.get_secret_value() if secret is not None else None,
            public_url=settings.codec_public_url,
            operators=OperatorRule(frozenset(settings.codec_operators), settings.operator_claim()),
            return_origins=settings.codec_cors_origins,
            scope=settings.codec_signin_scope,
            session_seconds=settings.codec_session_seconds,
            session_key=settings.session_key_bytes(),
            same_site=settings.codec_session_same_site,
            algorithms=settings.codec_oidc_algs,
            leeway_seconds=settings.codec_clock_leeway,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        )
    return create_codec_app(
        # Shows whatever history holds, plaintext included; the worker is the one that refuses it.
        AesGcmCodec(settings.payload_key_bytes, require_encryption=False),
        auth=CodecAuth(settings.operator_tokens(), oidc, signin, browser_origins=settings.codec_cors_origins),
        cors_origins=settings.codec_cors_origins,
        allowed_hosts=settings.allowed_hosts(),
        allow_encode=settings.codec_allow_encode,
        max_body_bytes=settings.codec_max_body_bytes,
        read_timeout=settings.codec_read_timeout,
    )
