"""A CIBA OP of our own for push mode, which oidc-provider does not implement (CIBA §10.3).

It serves discovery, its JWKS and the backchannel endpoint, signs ID tokens with its own RSA
key, and pushes the token response (or an error) to the client's notification endpoint. A
test can make it push what a hostile or broken OP would: the ID token of another request, a
bad at_hash or rt_hash, or the wrong bearer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from temporal_ciba.ciba._binding import AUTH_REQ_ID_CLAIM
from temporal_ciba.ciba._validation import token_hash
from tests.support.temporal import free_port, wait_for

CIBA_GRANT = "urn:openid:params:grant-type:ciba"


class PushOP:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        notification_endpoint: str,
        ca_path: str,
        port: int | None = None,
        issuer: str | None = None,
    ) -> None:
        """`issuer` when clients reach it at another address than its own port (through a proxy)."""
        self.port = port or free_port()
        self.issuer = issuer or f"http://127.0.0.1:{self.port}"
        self.client_id = client_id
        self.client_secret = client_secret
        self.notification_endpoint = notification_endpoint
        self.ca_path = ca_path
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "push-op-" + secrets.token_hex(4)
        self.requests: dict[str, dict[str, Any]] = {}
        self.token_endpoint_calls = 0
        self.issued: dict[str, dict[str, Any]] = {}  # auth_req_id -> the token response pushed
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    # The OP's endpoints ----------------------------------------------------------------------

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "token_endpoint": f"{self.issuer}/token",
                    "jwks_uri": f"{self.issuer}/jwks",
                    "backchannel_authentication_endpoint": f"{self.issuer}/backchannel",
                    "backchannel_token_delivery_modes_supported": ["push"],
                    "grant_types_supported": [CIBA_GRANT],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )

        async def jwks(request: Request) -> Response:
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
            return JSONResponse({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

        async def backchannel(request: Request) -> Response:
            expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            form = {name: values[0] for name, values in parse_qs((await request.body()).decode()).items()}
            if not form.get("client_notification_token"):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            auth_req_id = secrets.token_urlsafe(24)
            expires_in = int(form["requested_expiry"]) if form.get("requested_expiry", "").isdigit() else 300
            self.requests[auth_req_id] = {
                "login_hint": form.get("login_hint"),
                "scope": form.get("scope"),
                "bearer": form.get("client_notification_token"),
                "authorization_details": json.loads(form["authorization_details"])
                if form.get("authorization_details")
                else None,
                "binding_message": form.get("binding_message"),
                "expires_at": time.time() + expires_in,
                "status": "pending",
            }
            return JSONResponse({"auth_req_id": auth_req_id, "expires_in": expires_in})

        async def token(request: Request) -> Response:
            self.token_endpoint_calls += 1
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/jwks", jwks),
                Route("/backchannel", backchannel, methods=["POST"]),
                Route("/token", token, methods=["POST"]),
            ]
        )

    async def start(self) -> None:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        server = self._server
        await wait_for(lambda: server.started, timeout=10, interval=0.05, what="the push OP to serve")

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task

    # The user's phone, and what the OP then pushes -------------------------------------------

    def id_token(
        self, auth_req_id: str, access_token: str, refresh_token: str, tamper: str | None, sub: str | None = None
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": sub or self.requests[auth_req_id]["login_hint"],
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            AUTH_REQ_ID_CLAIM: "another-request" if tamper == "auth_req_id_of_another_request" else auth_req_id,
            "at_hash": token_hash("another-access-token" if tamper == "bad_at_hash" else access_token, "RS256"),
            "rt_hash": token_hash("another-refresh-token" if tamper == "bad_rt_hash" else refresh_token, "RS256"),
        }
        if tamper == "no_auth_req_id_claim":  # what a stock poll/ping OP sends
            del claims[AUTH_REQ_ID_CLAIM]
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def pending(self) -> list[dict[str, Any]]:
        """The requests nobody has decided yet and that have not expired, with their auth_req_id."""
        now = time.time()
        return [
            {"auth_req_id": auth_req_id, **request}
            for auth_req_id, request in self.requests.items()
            if request["status"] == "pending" and request["expires_at"] > now
        ]

    async def deliver(self, auth_req_id: str, *, deny: bool = False, sub: str | None = None) -> int | None:
        """Decide and push, again after a second while the callback does not take it (refused,
        cut, or answering 5xx), until the request expires: an OP that retries its push. The last
        HTTP status, or None when no push got an answer."""
        request = self.requests[auth_req_id]
        request["status"] = "denied" if deny else "approved"
        status = None
        while time.time() < request["expires_at"]:
            try:
                status = await self.push(auth_req_id, deny=deny, sub=sub)
            except httpx.HTTPError:
                status = None
            if status is not None and status < 500:
                return status
            await asyncio.sleep(1)
        return status

    async def push(
        self, auth_req_id: str, *, tamper: str | None = None, deny: bool = False, sub: str | None = None
    ) -> int:
        """Push the decision (approved as `sub`, by default the person asked); the callback's HTTP status."""
        request = self.requests[auth_req_id]
        if deny:
            body: dict[str, Any] = {
                "auth_req_id": auth_req_id,
                "error": "access_denied",
                "error_description": "the end-user denied the request",
            }
        else:
            access_token, refresh_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            body = {
                "auth_req_id": auth_req_id,
                "access_token": access_token,
                "token_type": "Bearer",
                "refresh_token": refresh_token,
                "expires_in": 300,
                "id_token": self.id_token(auth_req_id, access_token, refresh_token, tamper, sub),
                "scope": request["scope"],
            }
            if request["authorization_details"] is not None:
                body["authorization_details"] = request["authorization_details"]
            self.issued[auth_req_id] = body
        bearer = secrets.token_urlsafe(32) if tamper == "wrong_bearer" else request["bearer"]
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=self.ca_path), timeout=10) as http:
            response = await http.post(
                self.notification_endpoint, json=body, headers={"authorization": f"Bearer {bearer}"}
            )
        return response.status_code
