"""`CibaClient`: the I/O driver around the pure protocol modules.

Two calls make CIBA (as in panva's openid-client): `authenticate` sends the backchannel
request; `request_token` asks once for the tokens, `poll` keeps asking by the rules.
`validate` checks what came back against the original request. Every HTTP call has an
explicit timeout; the OP may hold a token request open (long polling), so the default read
timeout is 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from pydantic import SecretStr

from ._backchannel import (
    Acknowledgement,
    AuthenticationRequest,
    authentication_request_form,
    process_authentication_response,
)
from ._binding import RequestBinding, ValidatedApproval, ValidationPolicy
from ._client_auth import TLS_CLIENT_AUTH_METHODS, ClientAuth, ClientSigningKey
from ._discovery import (
    ClientAuthMethod,
    DeliveryMode,
    ProviderMetadata,
    check_ciba_support,
    fetch_jwks,
    fetch_provider_metadata,
    transport_cause,
)
from ._dpop import USE_DPOP_NONCE, DPoPKey
from ._errors import (
    CibaError,
    ExpiredToken,
    InvalidAuthenticationRequest,
    KeyNotFound,
    ProtocolError,
    TokenRequestInFlight,
    TransportError,
)
from ._http import json_object, raise_for_error
from ._id_token_encryption import IdTokenDecryptionKey, decrypt_id_token
from ._jwks import JwksCache
from ._mtls import ClientCertificate
from ._request_object import signed_request_form
from ._token import (
    Granted,
    Pending,
    PollSchedule,
    RetryLater,
    SlowDown,
    TokenResponse,
    process_token_response,
    token_request_form,
)
from ._validation import check_id_token_hint, validate_token_response

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Requests to the OP in flight at once, each sure of a connection of its own: none ever waits
# inside httpx's connection pool, where a pool timeout or a cancellation can leave a slot taken
# for good (encode/httpcore#1093) until every request fails with PoolTimeout. Others wait here,
# as long as the pool timeout allows.
MAX_CONNECTIONS = 100
METADATA_TTL_SECONDS = 3600.0


class CibaClient:
    """A CIBA relying party for one OP and one client registration."""

    def __init__(
        self,
        *,
        issuer: str,
        client_auth: ClientAuth,
        delivery_mode: DeliveryMode = "poll",
        policy: ValidationPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        request_signing_key: ClientSigningKey | None = None,
        sign_requests: bool = False,
        dpop: bool = False,
        id_token_decryption_key: IdTokenDecryptionKey | None = None,
        client_certificate: ClientCertificate | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if client_auth.method in TLS_CLIENT_AUTH_METHODS and client_certificate is None:
            raise ValueError(f"{client_auth.method} needs a client certificate")
        self.issuer = issuer
        self.client_auth = client_auth
        # CIBA §7.1.1: signed authentication requests, when asked for here or by the OP.
        self._request_signing_key = request_signing_key
        self._sign_requests = sign_requests
        # RFC 9449: token requests carry a DPoP proof (the caller holds the key per approval).
        self.dpop = dpop
        self._dpop_nonce: str | None = None
        # OIDC Core §10.2: ID tokens arrive encrypted to this key (the client's registration says so).
        self._id_token_decryption_key = id_token_decryption_key
        self.delivery_mode: DeliveryMode = delivery_mode
        self.policy = policy or ValidationPolicy()
        self._timeout = timeout
        # RFC 8705: the certificate goes with every call (an `http` passed in must present it).
        self.client_certificate = client_certificate
        self._owns_http = http is None
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._http = http or self._new_http()
        self._closing: set[asyncio.Future[None]] = set()
        self._clock = clock
        self._monotonic = monotonic
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = float("-inf")
        self._metadata_lock = asyncio.Lock()
        self._jwks = JwksCache(self._fetch_jwks, clock=monotonic)
        self._in_flight: set[str] = set()

    @property
    def client_id(self) -> str:
        return self.client_auth.client_id

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _new_http(self) -> httpx.AsyncClient:
        # Redirects are never followed: an OP endpoint that redirects is misconfigured or hostile.
        certificate = self.client_certificate
        return httpx.AsyncClient(
            timeout=self._timeout,
            follow_redirects=False,
            verify=certificate.ssl_context() if certificate is not None else True,
            limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=20),
        )

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[httpx.AsyncClient]:
        """The HTTP client, once one of MAX_CONNECTIONS slots is free (within the pool timeout).

        A PoolTimeout all the same means the pool lost slots: an owned pool is replaced."""
        try:
            async with asyncio.timeout(self._timeout.pool):
                await self._slots.acquire()
        except TimeoutError:
            raise TransportError(f"{what}: every connection to the OP stayed busy") from None
        try:
            yield self._http
        except Exception as exc:
            # The fetches turn httpx's errors into TransportError (the original is its context).
            if isinstance(exc, httpx.PoolTimeout) or isinstance(exc.__context__, httpx.PoolTimeout):
                self._renew_pool()
            raise
        finally:
            self._slots.release()

    def _renew_pool(self) -> None:
        if not self._owns_http:
            return
        stale, self._http = self._http, self._new_http()
        closing = asyncio.ensure_future(stale.aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def __aenter__(self) -> CibaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Discovery ------------------------------------------------------------------------------

    async def metadata(self) -> ProviderMetadata:
        """The OP's metadata, fetched once an hour and checked for the CIBA support we need."""
        async with self._metadata_lock:
            if self._metadata is None or self._monotonic() - self._metadata_at > METADATA_TTL_SECONDS:
                async with self._connection("discovery") as http:
                    metadata = await fetch_provider_metadata(http, self.issuer, timeout=self._timeout)
                method: ClientAuthMethod = self.client_auth.method  # type: ignore[assignment]
                check_ciba_support(metadata, delivery_mode=self.delivery_mode, client_auth_method=method)
                if self.client_certificate is not None:
                    metadata = metadata.for_mutual_tls()
                self._metadata, self._metadata_at = metadata, self._monotonic()
            return self._metadata

    # Requests -------------------------------------------------------------------------------

    async def _post(
        self,
        url: str,
        form: dict[str, Any],
        metadata: ProviderMetadata,
        what: str,
        *,
        dpop_key: DPoPKey | None = None,
    ) -> httpx.Response:
        """POST as this client, with a DPoP proof when `dpop_key` is given.

        The proof follows RFC 9449 §5; the request is sent once more with the OP's nonce when it
        answers use_dpop_nonce (§8)."""
        response = await self._post_once(url, form, metadata, what, dpop_key)
        if dpop_key is not None and self._asks_for_nonce(response):
            response = await self._post_once(url, form, metadata, what, dpop_key)
        return response

    def _asks_for_nonce(self, response: httpx.Response) -> bool:
        """RFC 9449 §8: remember the OP's latest DPoP-Nonce; True when it refused for want of one."""
        nonce = response.headers.get("dpop-nonce")
        if nonce is None:
            return False
        self._dpop_nonce = nonce
        if response.status_code not in (400, 401):
            return False
        try:
            return json_object(response, "DPoP").get("error") == USE_DPOP_NONCE
        except ProtocolError:
            return False

    async def _post_once(
        self, url: str, form: dict[str, Any], metadata: ProviderMetadata, what: str, dpop_key: DPoPKey | None
    ) -> httpx.Response:
        headers = {"accept": "application/json"}
        now = self._clock()
        self.client_auth.apply(
            form,
            headers,
            audience=metadata.issuer,
            now=now,
            allowed_algs=metadata.token_endpoint_auth_signing_alg_values_supported,
        )
        if dpop_key is not None:
            headers["dpop"] = dpop_key.proof(htm="POST", htu=url, now=now, nonce=self._dpop_nonce)
        try:
            async with self._connection(what) as http:
                return await http.post(url, data=form, headers=headers, timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransportError(f"{what}: {transport_cause(exc)}") from None
        except httpx.TimeoutException:
            raise TransportError(f"{what}: the OP did not answer in time", request_sent=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"{what}: {transport_cause(exc)}", request_sent=True) from None

    async def authenticate(self, request: AuthenticationRequest) -> Acknowledgement:
        """Send the backchannel authentication request (CIBA §7.1) and validate the ack (§7.3)."""
        metadata = await self.metadata()
        form = authentication_request_form(request, metadata, self.delivery_mode)
        if self._sign_requests or metadata.require_signed_request_object:
            form = self._signed(form, metadata)
        assert metadata.backchannel_authentication_endpoint is not None
        response = await self._post(
            metadata.backchannel_authentication_endpoint, form, metadata, "backchannel authentication"
        )
        return process_authentication_response(response, now=self._clock())

    def _signed(self, form: dict[str, Any], metadata: ProviderMetadata) -> dict[str, Any]:
        """CIBA §7.1.1: the request as a JWT signed with the client's key, aud the OP's issuer."""
        if self._request_signing_key is None:
            raise InvalidAuthenticationRequest(
                "signed authentication requests need the client's private key (CIBA §7.1.1), and none is configured"
            )
        allowed = metadata.backchannel_authentication_request_signing_alg_values_supported
        if not allowed:
            raise InvalidAuthenticationRequest(
                "the OP does not support signed authentication requests: its metadata has no "
                "backchannel_authentication_request_signing_alg_values_supported (CIBA §4)"
            )
        try:
            return signed_request_form(
                form,
                client_id=self.client_id,
                audience=metadata.issuer,
                signing_key=self._request_signing_key,
                now=self._clock(),
                allowed_algs=allowed,
            )
        except ValueError as exc:
            raise InvalidAuthenticationRequest(str(exc)) from None

    async def request_token(
        self, auth_req_id: str, *, dpop_key: DPoPKey | None = None
    ) -> Granted | Pending | SlowDown | RetryLater:
        """One token request (CIBA §10.1): Granted, Pending, SlowDown or RetryLater, or a final OAuthError.

        CIBA §7.3: never two requests in flight for one auth_req_id. With `dpop_key` the request
        carries a DPoP proof and the tokens must come back bound to it (`token_type` DPoP).
        """
        if auth_req_id in self._in_flight:
            raise TokenRequestInFlight("a token request for this auth_req_id is already in flight")
        self._in_flight.add(auth_req_id)
        try:
            metadata = await self.metadata()
            response = await self._post(
                metadata.token_endpoint, token_request_form(auth_req_id), metadata, "token endpoint", dpop_key=dpop_key
            )
            token_type = "DPoP" if dpop_key is not None else "Bearer"
            return process_token_response(response, now=self._clock(), token_type=token_type)
        finally:
            self._in_flight.discard(auth_req_id)

    async def poll(
        self,
        ack: Acknowledgement,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_backoff: float = 30.0,
    ) -> TokenResponse:
        """Poll until the tokens come or the request ends (expired, denied, ...).

        Waits `interval` before the first request and between requests, grows it on slow_down,
        honours Retry-After, retries transport failures with exponential backoff, and stops
        with ExpiredToken once expires_in has passed.
        """
        deadline = ack.expires_at
        schedule = PollSchedule(interval=ack.interval)
        delay = schedule.interval
        backoff = 1.0
        while True:
            if self._clock() + delay >= deadline:
                raise ExpiredToken("the request expired before the user decided (expires_in passed)")
            await sleep(delay)
            try:
                result = await self.request_token(ack.auth_req_id)
            except TransportError:
                delay, backoff = max(schedule.interval, backoff), min(backoff * 2, max_backoff)
                continue
            backoff = 1.0
            if isinstance(result, Granted):
                return result.tokens
            schedule, delay = schedule.after(result)

    # Validation -----------------------------------------------------------------------------

    async def validate(self, tokens: TokenResponse, binding: RequestBinding) -> ValidatedApproval:
        """Validate tokens against the original request; refetch the JWKS once for an unknown kid."""
        if binding.issuer != self.issuer or binding.client_id != self.client_id:
            raise CibaError("the request binding is for another issuer or client")
        id_token = tokens.id_token.get_secret_value()
        signed = decrypt_id_token(id_token, self._id_token_decryption_key)
        if signed != id_token:
            tokens = tokens.model_copy(update={"id_token": SecretStr(signed)})
        keys = await self._jwks.keys()
        try:
            return validate_token_response(tokens, binding, keys, now=self._clock(), policy=self.policy)
        except KeyNotFound:
            await self._jwks.refresh()
            fresh = await self._jwks.keys()
            # Unchanged keys (refetched too recently, or the same set): the kid is truly unknown.
            if fresh is keys:
                raise
        return validate_token_response(tokens, binding, fresh, now=self._clock(), policy=self.policy)

    async def id_token_hint_subject(self, id_token_hint: str) -> str:
        """The `sub` of an id_token_hint, once it is proven to be an ID token this OP issued us.

        It must be an ID token this OP issued to this client (TokenRejected otherwise); the JWKS
        is refetched once for an unknown kid."""
        keys = await self._jwks.keys()
        try:
            return check_id_token_hint(
                id_token_hint, keys, issuer=self.issuer, client_id=self.client_id, policy=self.policy
            )
        except KeyNotFound:
            await self._jwks.refresh()
            fresh = await self._jwks.keys()
            if fresh is keys:
                raise
        return check_id_token_hint(
            id_token_hint, fresh, issuer=self.issuer, client_id=self.client_id, policy=self.policy
        )

    async def _fetch_jwks(self) -> dict[str, Any]:
        metadata = await self.metadata()
        async with self._connection("JWK Set") as http:
            return await fetch_jwks(http, metadata.jwks_uri, timeout=self._timeout)

    # Token management (RFC 7662, RFC 7009) ---------------------------------------------------

    async def introspect(self, token: str, *, token_type_hint: str = "access_token") -> dict[str, Any]:
        """RFC 7662 §2: the OP's view of a token (active, client_id, scope, ...)."""
        metadata = await self.metadata()
        if not metadata.introspection_endpoint:
            raise CibaError("the OP has no introspection_endpoint")
        response = await self._post(
            metadata.introspection_endpoint,
            {"token": token, "token_type_hint": token_type_hint},
            metadata,
            "introspection",
        )
        raise_for_error(response, "introspection")
        return json_object(response, "introspection")

    async def revoke(
        self, token: str, *, token_type_hint: str = "access_token", dpop_key: DPoPKey | None = None
    ) -> bool:
        """RFC 7009 §2: revoke a token; False when the OP has no revocation endpoint.

        With the DPoP key the tokens are bound to, the request carries a proof too (RFC 9449 §5)."""
        metadata = await self.metadata()
        if not metadata.revocation_endpoint:
            return False
        response = await self._post(
            metadata.revocation_endpoint,
            {"token": token, "token_type_hint": token_type_hint},
            metadata,
            "revocation",
            dpop_key=dpop_key,
        )
        raise_for_error(response, "revocation")
        return True
