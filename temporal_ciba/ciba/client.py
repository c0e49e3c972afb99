"""`CibaClient`: the I/O driver around the pure protocol modules.

Two calls make CIBA (as in panva's openid-client): `authenticate` sends the backchannel
request; `request_token` asks once for the tokens, `poll` keeps asking by the rules.
`validate` checks what came back against the original request. Every HTTP call has an
explicit timeout; the OP may hold a token request open (long polling), so the default read
timeout is 30 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ._http import json_object, raise_for_error
from .backchannel import (
    Acknowledgement,
    AuthenticationRequest,
    authentication_request_form,
    process_authentication_response,
)
from .client_auth import ClientAuth
from .discovery import (
    ClientAuthMethod,
    DeliveryMode,
    ProviderMetadata,
    check_ciba_support,
    fetch_provider_metadata,
    transport_cause,
)
from .errors import CibaError, ExpiredToken, KeyNotFound, TokenRequestInFlight, TransportError
from .jwks import JwksCache
from .token import (
    Granted,
    Pending,
    PollSchedule,
    RetryLater,
    SlowDown,
    TokenResponse,
    process_token_response,
    token_request_form,
)
from .validation import (
    RequestBinding,
    ValidatedApproval,
    ValidationPolicy,
    check_id_token_hint,
    validate_token_response,
)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
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
    ) -> None:
        self.issuer = issuer
        self.client_auth = client_auth
        self.delivery_mode: DeliveryMode = delivery_mode
        self.policy = policy or ValidationPolicy()
        self._timeout = timeout
        self._owns_http = http is None
        # Redirects are never followed: an OP endpoint that redirects is misconfigured or hostile.
        self._http = http or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
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

    async def __aenter__(self) -> CibaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Discovery ------------------------------------------------------------------------------

    async def metadata(self) -> ProviderMetadata:
        """The OP's metadata, fetched once an hour and checked for the CIBA support we need."""
        async with self._metadata_lock:
            if self._metadata is None or self._monotonic() - self._metadata_at > METADATA_TTL_SECONDS:
                metadata = await fetch_provider_metadata(self._http, self.issuer, timeout=self._timeout)
                method: ClientAuthMethod = self.client_auth.method  # type: ignore[assignment]
                check_ciba_support(metadata, delivery_mode=self.delivery_mode, client_auth_method=method)
                self._metadata, self._metadata_at = metadata, self._monotonic()
            return self._metadata

    # Requests -------------------------------------------------------------------------------

    async def _post(self, url: str, form: dict[str, Any], metadata: ProviderMetadata, what: str) -> httpx.Response:
        headers = {"accept": "application/json"}
        self.client_auth.apply(
            form,
            headers,
            audience=metadata.issuer,
            now=self._clock(),
            allowed_algs=metadata.token_endpoint_auth_signing_alg_values_supported,
        )
        try:
            return await self._http.post(url, data=form, headers=headers, timeout=self._timeout)
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
        assert metadata.backchannel_authentication_endpoint is not None
        response = await self._post(
            metadata.backchannel_authentication_endpoint, form, metadata, "backchannel authentication"
        )
        return process_authentication_response(response, now=self._clock())

    async def request_token(self, auth_req_id: str) -> Granted | Pending | SlowDown | RetryLater:
        """One token request (CIBA §10.1): Granted, Pending, SlowDown or RetryLater, or a final OAuthError.

        CIBA §7.3: never two requests in flight for one auth_req_id.
        """
        if auth_req_id in self._in_flight:
            raise TokenRequestInFlight("a token request for this auth_req_id is already in flight")
        self._in_flight.add(auth_req_id)
        try:
            metadata = await self.metadata()
            response = await self._post(
                metadata.token_endpoint, token_request_form(auth_req_id), metadata, "token endpoint"
            )
            return process_token_response(response, now=self._clock())
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
        """The `sub` of an id_token_hint, once it is proven to be an ID token this OP issued to
        this client (TokenRejected otherwise); the JWKS is refetched once for an unknown kid."""
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
        try:
            response = await self._http.get(
                metadata.jwks_uri, headers={"accept": "application/json"}, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"jwks_uri: {transport_cause(exc)}") from None
        raise_for_error(response, "jwks_uri")
        return json_object(response, "jwks_uri")

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

    async def revoke(self, token: str, *, token_type_hint: str = "access_token") -> bool:
        """RFC 7009 §2: revoke a token; False when the OP has no revocation endpoint."""
        metadata = await self.metadata()
        if not metadata.revocation_endpoint:
            return False
        response = await self._post(
            metadata.revocation_endpoint, {"token": token, "token_type_hint": token_type_hint}, metadata, "revocation"
        )
        raise_for_error(response, "revocation")
        return True
