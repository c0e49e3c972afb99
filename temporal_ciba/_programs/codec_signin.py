"""Browser sign-in to the codec server, so the Temporal UI decodes for a signed-in operator.

The UI cannot send a bearer token to a codec server of its own (the dev server has no sign-in),
but it can send cookies ("include credentials"). So the codec server signs the operator in at
its OP with the OpenID Connect authorization code flow and keeps a short session in a cookie:

    GET  /login[?next=URL]  redirect to the OP: state, nonce and a PKCE S256 verifier, kept in
                            a sealed cookie for the way back (Path=/callback, ten minutes)
    GET  /callback          the OP's answer: the state must match the cookie's (once), the code
                            is exchanged with the verifier, the ID token validated (signature
                            against the OP's JWKS, iss, aud, azp, exp, iat, nonce), and only an
                            operator (CODEC_OPERATORS, CODEC_OPERATOR_CLAIM) gets a session
    POST /logout            the session ends (its id is refused until it would have expired)
    GET  /                  who is signed in, with sign-in and sign-out buttons

The session cookie holds no token: it is the subject, a random session id and an expiry, sealed
with AES-GCM under a key of this server (CODEC_SESSION_KEY), HttpOnly, Secure on https,
SameSite as configured. The OP's tokens are used once, for the ID token's claims, and dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from temporal_ciba.ciba import CibaError, JwksCache, fetch_jwks, fetch_provider_metadata, select_keys

log = logging.getLogger("temporal_ciba.codec_server")
SameSite = Literal["lax", "strict", "none"]

# How long the browser has between /login and the OP's redirect to /callback.
LOGIN_SECONDS = 600
# An ID token issued longer ago than this (plus the leeway) is not the answer to our request.
ID_TOKEN_MAX_AGE = 600
# A query string longer than this is not one the OP sends; refused before it is parsed.
MAX_QUERY_CHARS = 4096
# code, state and the OP's error fields: printable ASCII of at most this length.
MAX_PARAMETER_CHARS = 2048
MAX_TOKEN_RESPONSE_BYTES = 256 * 1024


class SignInRefused(Exception):
    """A sign-in step the server refuses: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Sealer:
    """AES-GCM sealing of small JSON objects into cookie values; the cookie's name is the
    associated data, so one kind of cookie never opens as another."""

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key if key is not None else os.urandom(32))

    def seal(self, purpose: str, value: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(value, separators=(",", ":")).encode(), purpose.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, purpose: str, text: str | None) -> dict[str, Any] | None:
        """The sealed object, or None for anything else (missing, altered, another purpose)."""
        if not text or len(text) > 4096 or not text.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            value = json.loads(self._aead.decrypt(raw[:12], raw[12:], purpose.encode()))
        except (ValueError, InvalidTag):
            return None
        return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Session:
    """A signed-in operator: who, which session, until when (epoch seconds)."""

    sub: str
    sid: str
    expires_at: int


@dataclass(frozen=True)
class OperatorRule:
    """Who may decode once signed in: listed subjects, or holders of a claim's value."""

    subjects: frozenset[str]
    claim: tuple[str, str] | None = None

    def admits(self, claims: dict[str, Any]) -> bool:
        if claims.get("sub") in self.subjects:
            return True
        if self.claim is None:
            return False
        name, value = self.claim
        held = claims.get(name)
        return held == value or (isinstance(held, list) and value in held)


class _Spent:
    """Values seen once (login states), remembered until they would have expired anyway."""

    def __init__(self, clock: Callable[[], float], limit: int = 100_000) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock
        self._limit = limit

    def add(self, value: str, until: float) -> bool:
        """False if `value` was already spent."""
        now = self._clock()
        if len(self._until) >= self._limit:
            self._until = {key: end for key, end in self._until.items() if end > now}
        if self._until.get(value, 0) > now:
            return False
        self._until[value] = until
        return True

    def __contains__(self, value: str) -> bool:
        return self._until.get(value, 0) > self._clock()


def _printable(value: str | None, name: str) -> str:
    if value is None or not value or len(value) > MAX_PARAMETER_CHARS or not (value.isascii() and value.isprintable()):
        raise SignInRefused(400, f"the {name} parameter is missing or malformed")
    return value


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class BrowserSignIn:
    """The sign-in flow and its cookies (see the module docstring)."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        public_url: str,
        operators: OperatorRule,
        return_origins: Sequence[str],
        scope: str = "openid",
        session_seconds: int = 1800,
        session_key: bytes | None = None,
        same_site: SameSite = "lax",
        algorithms: Sequence[str] = ("RS256", "PS256", "ES256"),
        leeway_seconds: int = 60,
        timeout: httpx.Timeout = httpx.Timeout(10.0, connect=5.0),  # noqa: B008 (immutable)
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.public_url = public_url.rstrip("/")
        self.redirect_uri = self.public_url + "/callback"
        self.origin = _origin(self.public_url)
        self.operators = operators
        self.return_origins = frozenset(_origin(origin) for origin in return_origins)
        self.scope = scope if "openid" in scope.split() else f"openid {scope}"
        self.session_seconds = session_seconds
        self.same_site = same_site
        self.algorithms = tuple(algorithms)
        self.leeway_seconds = leeway_seconds
        self._timeout = timeout
        self._clock = clock
        self._transport = transport
        self._sealer = Sealer(session_key)
        self.secure = self.public_url.startswith("https://")
        # __Host-: the browser keeps it only from a secure origin, for this host, path /.
        self.session_cookie = "__Host-ciba-codec-session" if self.secure else "ciba-codec-session"
        self.login_cookie = "__Secure-ciba-codec-login" if self.secure else "ciba-codec-login"
        self._metadata: Any = None
        self._jwks = JwksCache(self._fetch_jwks)
        self._spent_states = _Spent(clock)
        self._ended_sessions = _Spent(clock)

    def __repr__(self) -> str:
        return f"BrowserSignIn(issuer={self.issuer!r}, client_id={self.client_id!r})"

    # The OP --------------------------------------------------------------------------------

    async def _provider(self, http: httpx.AsyncClient) -> Any:
        if self._metadata is None:
            metadata = await fetch_provider_metadata(http, self.issuer, timeout=self._timeout)
            if metadata.authorization_endpoint is None:
                raise SignInRefused(503, "the OP's discovery document names no authorization_endpoint")
            self._metadata = metadata
        return self._metadata

    def _client(self) -> httpx.AsyncClient:
        # Redirects are never followed; every request has explicit timeouts.
        return httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, transport=self._transport)

    async def _fetch_jwks(self) -> dict[str, Any]:
        async with self._client() as http:
            metadata = await self._provider(http)
            return await fetch_jwks(http, metadata.jwks_uri, timeout=self._timeout)

    async def _keys(self, *, refresh: bool) -> list[Any]:
        try:
            if refresh:
                await self._jwks.refresh()
            return await self._jwks.keys()
        except CibaError as exc:
            log.warning("codec server sign-in: the OP's keys could not be loaded: %s", exc)
            raise SignInRefused(503, "the OP's keys could not be loaded; try again later") from None

    # Sessions ------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        """The request's session, if its cookie opens, is unexpired and not ended."""
        value = self._sealer.open(self.session_cookie, request.cookies.get(self.session_cookie))
        if value is None:
            return None
        sub, sid, expires_at = value.get("sub"), value.get("sid"), value.get("exp")
        if not isinstance(sub, str) or not isinstance(sid, str) or not isinstance(expires_at, int):
            return None
        if expires_at <= self._clock() or sid in self._ended_sessions:
            return None
        return Session(sub, sid, expires_at)

    def _cookie(
        self, response: Response, name: str, value: str, *, max_age: int, path: str, same_site: SameSite
    ) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=path, secure=self.secure, httponly=True, samesite=same_site
        )

    # The routes ----------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """Redirect to the OP's authorization endpoint, the state kept in a sealed cookie."""
        next_url = self._return_url(request)
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        async with self._client() as http:
            try:
                metadata = await self._provider(http)
            except CibaError as exc:
                log.warning("codec server sign-in: the OP's discovery failed: %s", exc)
                raise SignInRefused(503, "the OP could not be reached; try again later") from None
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": self.scope,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = metadata.authorization_endpoint
        response = RedirectResponse(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", status_code=302)
        expires = self._now() + LOGIN_SECONDS
        sealed = self._sealer.seal(
            self.login_cookie,
            {"state": state, "nonce": nonce, "verifier": verifier, "next": next_url, "exp": expires},
        )
        # Lax: the cookie must come back on the OP's redirect, a top-level navigation from its site.
        self._cookie(response, self.login_cookie, sealed, max_age=LOGIN_SECONDS, path="/callback", same_site="lax")
        response.headers["cache-control"] = "no-store"
        return response

    async def callback(self, request: Request) -> Response:
        """The OP's redirect: check the state, exchange the code, validate the ID token, open a session."""
        params = request.query_params
        login = self._sealer.open(self.login_cookie, request.cookies.get(self.login_cookie))
        if login is None or not isinstance(login.get("exp"), int) or login["exp"] <= self._clock():
            raise SignInRefused(400, "no sign-in is under way in this browser (or it took too long): start at /login")
        state = _printable(params.get("state"), "state")
        if not hmac.compare_digest(state.encode(), str(login.get("state", "")).encode()):
            raise SignInRefused(400, "the state does not match this browser's sign-in")
        if not self._spent_states.add(state, login["exp"]):
            raise SignInRefused(400, "this sign-in was already completed: start again at /login")
        if "error" in params:
            error = _printable(params.get("error"), "error")
            raise SignInRefused(401, f"the OP refused the sign-in: {error}")
        code = _printable(params.get("code"), "code")
        claims = await self._redeem(code, str(login.get("verifier", "")), str(login.get("nonce", "")))
        sub = claims["sub"]
        if not self.operators.admits(claims):
            log.info("codec server refused sign-in of sub=%r: not an operator", sub)
            raise SignInRefused(403, f"{sub} is not an operator of this codec server")
        expires_at = self._now() + self.session_seconds
        next_url = login.get("next")
        response: Response
        if isinstance(next_url, str) and next_url:
            response = RedirectResponse(next_url, status_code=302)
        else:
            response = self._page(f"Signed in as {sub} until {_clock_text(expires_at)}. The Temporal UI decodes now.")
        session = {"sub": sub, "sid": secrets.token_urlsafe(16), "exp": expires_at}
        sealed = self._sealer.seal(self.session_cookie, session)
        self._cookie(
            response, self.session_cookie, sealed, max_age=self.session_seconds, path="/", same_site=self.same_site
        )
        response.delete_cookie(self.login_cookie, path="/callback", secure=self.secure, httponly=True, samesite="lax")
        log.info("codec server: sub=%r signed in", sub)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session: the cookie is cleared and its id refused until it would have expired."""
        session = self.session(request)
        if session is not None:
            self._ended_sessions.add(session.sid, session.expires_at)
            log.info("codec server: sub=%r signed out", session.sub)
        response = self._page("Signed out.")
        response.delete_cookie(
            self.session_cookie, path="/", secure=self.secure, httponly=True, samesite=self.same_site
        )
        return response

    async def home(self, request: Request) -> Response:
        """Who is signed in, with the buttons to sign in and out."""
        session = self.session(request)
        if session is None:
            return self._page("Not signed in: the Temporal UI shows payloads encrypted.")
        return self._page(f"Signed in as {session.sub} until {_clock_text(session.expires_at)}.")

    # Helpers --------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    def _return_url(self, request: Request) -> str:
        """`next`, when it is a page of one of the UI's origins; else none (no open redirect)."""
        candidate = request.query_params.get("next")
        if candidate is None:
            return ""
        if len(candidate) > MAX_PARAMETER_CHARS or not (candidate.isascii() and candidate.isprintable()):
            raise SignInRefused(400, "the next parameter is malformed")
        parts = urlsplit(candidate)
        if parts.scheme not in ("http", "https") or parts.username or parts.password or "\\" in candidate:
            raise SignInRefused(400, "next must be a page of the Temporal UI")
        if _origin(candidate) not in self.return_origins:
            raise SignInRefused(400, "next must be a page of the Temporal UI (CIBA_CODEC_CORS_ORIGINS)")
        return candidate

    async def _redeem(self, code: str, verifier: str, nonce: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        auth: httpx.Auth | None = None
        if self._client_secret is None:
            form["client_id"] = self.client_id
        else:
            auth = httpx.BasicAuth(self.client_id, self._client_secret)
        async with self._client() as http:
            try:
                metadata = await self._provider(http)
                response = await http.post(
                    metadata.token_endpoint,
                    data=form,
                    auth=auth or httpx.USE_CLIENT_DEFAULT,
                    headers={"accept": "application/json"},
                )
            except CibaError as exc:
                log.warning("codec server sign-in: the OP's discovery failed: %s", exc)
                raise SignInRefused(503, "the OP could not be reached; try again later") from None
            except httpx.HTTPError as exc:
                log.warning("codec server sign-in: the token request failed: %s", type(exc).__name__)
                raise SignInRefused(503, "the OP could not be reached; try again later") from None
        if len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
            raise SignInRefused(502, "the OP's token response is too large")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            shown = error if isinstance(error, str) and error.isascii() and error.isprintable() else "no error code"
            log.info("codec server sign-in: the code was refused: HTTP %d %s", response.status_code, shown[:64])
            raise SignInRefused(401, f"the OP refused the code ({shown[:64]}): start again at /login")
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or len(id_token) > 16 * 1024:
            raise SignInRefused(502, "the OP's token response holds no ID token")
        return await self._validate(id_token, nonce)

    async def _validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims (OIDC Core §3.1.3.7), or SignInRefused(401)."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise SignInRefused(401, "the ID token is not a valid JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise SignInRefused(401, f"the ID token's algorithm is not one of {', '.join(self.algorithms)}")
        if kid is not None and not isinstance(kid, str):
            raise SignInRefused(401, "the ID token's kid is not a string")
        candidates = select_keys(await self._keys(refresh=False), alg=alg, kid=kid)
        if not candidates:
            candidates = select_keys(await self._keys(refresh=True), alg=alg, kid=kid)
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    id_token,
                    key.key,
                    algorithms=[alg],
                    audience=self.client_id,
                    issuer=self.issuer,
                    leeway=self.leeway_seconds,
                    options={"require": ["iss", "aud", "exp", "iat", "sub"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise SignInRefused(401, f"the ID token was refused: {exc}") from None
            self._check_claims(claims, nonce)
            return claims
        raise SignInRefused(401, "the ID token's signature does not verify with the OP's keys")

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        presented = claims.get("nonce")
        if not isinstance(presented, str) or not nonce or not hmac.compare_digest(presented.encode(), nonce.encode()):
            raise SignInRefused(401, "the ID token's nonce is not this sign-in's")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise SignInRefused(401, "the ID token names other audiences without azp naming this client")
        if "azp" in claims and claims["azp"] != self.client_id:
            raise SignInRefused(401, "the ID token's azp is another client")
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat < self._clock() - ID_TOKEN_MAX_AGE - self.leeway_seconds:
            raise SignInRefused(401, "the ID token was issued too long ago")
        if not isinstance(claims["sub"], str) or not claims["sub"] or not claims["sub"].isprintable():
            raise SignInRefused(401, "the ID token's sub is not a string")

    def _page(self, message: str) -> HTMLResponse:
        """A small page saying `message` (escaped), with the sign-in and sign-out buttons."""
        body = (
            "<!doctype html><html><head><meta charset=utf-8><title>temporal-ciba codec server</title>"
            '<link rel="icon" href="data:,"></head><body>'
            f'<p id="status">{html.escape(message)}</p>'
            '<p><a id="signin" href="/login">Sign in</a></p>'
            '<form method="post" action="/logout"><button id="signout" type="submit">Sign out</button></form>'
            "</body></html>"
        )
        return HTMLResponse(
            body,
            headers={
                "cache-control": "no-store",
                "content-security-policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
                "x-frame-options": "DENY",
            },
        )


def _clock_text(epoch: int) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(epoch))
