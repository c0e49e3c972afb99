"""The codec server's app in the test process: a crafted issuer, its tokens, bodies, raw ASGI calls.

The OIDC issuer (and OP) answers behind httpx.MockTransport with access tokens and ID tokens of
its keys; raw ASGI calls send any Host, Origin, Content-Length or pacing of the body, which an
HTTP client would not send."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import json_format
from starlette.types import ASGIApp, Message
from temporalio.api.common.v1 import Payload, Payloads

from temporal_ciba.crypto import AesGcmCodec

ISSUER = "https://op.example.test"
AUDIENCE = "temporal-codec"
CLIENT_ID = "codec-server"
CLIENT_SECRET = "codec-server-secret-0123456789abcdef"
PUBLIC_URL = "http://127.0.0.1:8081"
UI = "http://localhost:8233"
PAYLOAD_KEY = bytes(range(32))
OPERATOR_TOKEN = "operator-token-0123456789abcdef-0123456789"
SECOND_OPERATOR_TOKEN = "second-operator-token-0123456789abcdef"
SECRET = b'{"iban":"DE89370400440532013000"}'

KEY = rsa.generate_private_key(65537, 2048)
SECOND_KEY = rsa.generate_private_key(65537, 2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(private_key: Any, kid: str | None = "k1", alg: str = "RS256") -> dict[str, Any]:
    """The public JWK of `private_key`, with its kid (none if None) and alg."""
    algorithm = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    document = {**json.loads(algorithm.to_jwk(private_key.public_key())), "alg": alg, "use": "sig"}
    if kid is not None:
        document["kid"] = kid
    return document


def access_token(
    *,
    key: Any = KEY,
    alg: str = "RS256",
    kid: Any = "k1",
    typ: Any = "at+jwt",
    claims: dict[str, Any] | None = None,
    **more_claims: Any,
) -> str:
    """A JWT of ISSUER for AUDIENCE, an RFC 9068 access token unless told otherwise.

    `typ` is its header (a claim named typ goes in `claims`); a claim given as None is left out,
    and so are a kid or typ of None."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "operator-1", "iat": now, "exp": now + 300}
    body.update({**(claims or {}), **more_claims})
    headers = {name: value for name, value in {"kid": kid, "typ": typ}.items() if value is not None}
    token = jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers=headers)
    if typ is None:  # PyJWT writes typ JWT unless given one: take it out of the header
        token = resigned(token, key, typ=None)
    return token


def resigned(token: str, key: Any, **header: Any) -> str:
    """`token` under its header changed, signed again by `key` with RS256.

    A value of None removes the field: a header PyJWT would not write (a kid that is a number, no typ)."""
    old_header, payload, _ = token.split(".")
    fields = {**json.loads(base64.urlsafe_b64decode(old_header + "==")), **header}
    fields = {name: value for name, value in fields.items() if value is not None}
    encoded = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        f"{encoded}.{payload}".encode(), key
    )
    return f"{encoded}.{payload}." + base64.urlsafe_b64encode(signature).decode().rstrip("=")


def id_token(nonce: str, *, key: Any = KEY, alg: str = "RS256", kid: str = "k1", **claims: Any) -> str:
    """An ID token of ISSUER for the sign-in's client; a claim given as None is left out."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice", "iat": now, "exp": now + 300, "nonce": nonce, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


@dataclass
class FakeIssuer:
    """ISSUER's discovery document, its JWKS and its token endpoint, as an httpx.MockTransport handler.

    `key_sets` are served in turn by /jwks (the last one again and again); `token_answer` answers
    the token endpoint given the form (by default: PKCE checked against the challenge /login
    sent, then an ID token from `id_token_for(nonce)`). Every request is recorded."""

    key_sets: list[list[dict[str, Any]]] = field(default_factory=lambda: [[jwk(KEY)]])
    discovery: dict[str, Any] = field(default_factory=dict)
    id_token_for: Callable[[str], str] = id_token
    token_answer: Callable[[dict[str, list[str]]], httpx.Response] | None = None
    down: bool = False
    jwks_status: int = 200
    challenge: str = ""
    nonce: str = ""
    requests: list[httpx.Request] = field(default_factory=list)
    forms: list[dict[str, list[str]]] = field(default_factory=list)
    jwks_fetches: int = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.answer)

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            document = {
                "issuer": ISSUER,
                "authorization_endpoint": ISSUER + "/auth",
                "token_endpoint": ISSUER + "/token",
                "jwks_uri": ISSUER + "/jwks",
                **self.discovery,
            }
            return httpx.Response(200, json={name: value for name, value in document.items() if value is not None})
        if path == "/jwks":
            keys = self.key_sets[min(self.jwks_fetches, len(self.key_sets) - 1)]
            self.jwks_fetches += 1
            return httpx.Response(self.jwks_status, json={"keys": keys})
        if path == "/moved":
            return httpx.Response(302, headers={"location": ISSUER + "/jwks"})
        if path == "/token":
            form = parse_qs(request.content.decode())
            self.forms.append(form)
            if self.token_answer is not None:
                return self.token_answer(form)
            verifier = form["code_verifier"][0]
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if challenge != self.challenge:
                return httpx.Response(400, json={"error": "invalid_grant"})
            return httpx.Response(
                200, json={"access_token": "at", "token_type": "Bearer", "id_token": self.id_token_for(self.nonce)}
            )
        return httpx.Response(404)

    def saw_login(self, location: str) -> dict[str, list[str]]:
        """The query of /login's redirect to the OP; the OP remembers its challenge and nonce."""
        query = parse_qs(urlsplit(location).query)
        self.challenge, self.nonce = query["code_challenge"][0], query["nonce"][0]
        return query


async def encrypted_body(data: bytes = SECRET, key: bytes = PAYLOAD_KEY) -> bytes:
    """What the UI posts to /decode: one payload from history, encrypted under `key`."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=data)
    return json_format.MessageToJson(Payloads(payloads=await AesGcmCodec(key).encode([plain]))).encode()


def payloads_of(response: httpx.Response) -> list[Payload]:
    return list(json_format.ParseDict(response.json(), Payloads()).payloads)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key == name]
        return found[0] if found else None

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_call(
    app: ASGIApp,
    method: str = "POST",
    path: str = "/decode",
    *,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    chunks: list[bytes] = (),  # type: ignore[assignment]
    query: bytes = b"",
    body_arrives: bool = True,
) -> RawResponse:
    """One request straight to the ASGI app, its headers exactly as given (none added).

    Its body comes in `chunks`; with `body_arrives` False the body never comes after the head."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8081),
    }
    pending = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    pending.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[Message] = []

    async def receive() -> Message:
        if not body_arrives:
            await asyncio.Event().wait()
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    [start] = [message for message in sent if message["type"] == "http.response.start"]
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return RawResponse(start["status"], [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]], body)
