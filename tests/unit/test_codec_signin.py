"""The codec server's browser sign-in against an OP behind httpx.MockTransport: PKCE, and every
ID token rule (OIDC Core §3.1.3.7) that stands between a forged or misdirected token and a session.

The app runs in this process (ASGI); the OP is the mock below, so each test chooses the ID token
the OP answers with."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from temporal_ciba._programs.codec_server import CodecAuth, create_codec_app
from temporal_ciba._programs.codec_server_settings import CodecServerSettings
from temporal_ciba._programs.codec_signin import BrowserSignIn, OperatorRule, Sealer
from temporal_ciba._settings import ConfigError
from temporal_ciba.crypto import AesGcmCodec

ISSUER = "https://op.example.test"
CLIENT_ID = "codec-server"
CLIENT_SECRET = "codec-server-secret-0123456789abcdef"
PUBLIC_URL = "http://127.0.0.1:8081"
UI = "http://localhost:8233"
KEY = rsa.generate_private_key(65537, 2048)
OTHER_KEY = rsa.generate_private_key(65537, 2048)
PAYLOAD_KEY = bytes(range(32))


class MockOP:
    """Discovery, JWKS, and a token endpoint that checks PKCE and answers with `id_token(nonce)`."""

    def __init__(self, id_token: Callable[[str], str]) -> None:
        self.id_token = id_token
        self.challenge = ""
        self.nonce = ""
        self.forms: list[dict[str, list[str]]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": ISSUER + "/auth",
                    "token_endpoint": ISSUER + "/token",
                    "jwks_uri": ISSUER + "/jwks",
                },
            )
        if request.url.path == "/jwks":
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
            return httpx.Response(200, json={"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})
        if request.url.path == "/token":
            form = parse_qs(request.content.decode())
            self.forms.append(form)
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            verifier = form["code_verifier"][0]
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if request.headers.get("authorization") != f"Basic {expected}" or challenge != self.challenge:
                return httpx.Response(400, json={"error": "invalid_grant"})
            return httpx.Response(
                200, json={"access_token": "at", "token_type": "Bearer", "id_token": self.id_token(self.nonce)}
            )
        return httpx.Response(404)


def id_token(expected_nonce: str, *, key: Any = KEY, alg: str = "RS256", kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice", "iat": now, "exp": now + 300, "nonce": expected_nonce}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


def with_header(token: str, **header: Any) -> str:
    """`token` signed again by KEY under its header changed (pyjwt would not write such a header)."""
    old_header, payload, _ = token.split(".")
    fields = {**json.loads(base64.urlsafe_b64decode(old_header + "==")), **header}
    encoded = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    signature = KEY.sign(f"{encoded}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{encoded}.{payload}." + base64.urlsafe_b64encode(signature).decode().rstrip("=")


def app_with(op: MockOP, operators: OperatorRule, public_url: str = PUBLIC_URL, clock: Any = time.time) -> Any:
    signin = BrowserSignIn(
        clock=clock,
        issuer=ISSUER,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        public_url=public_url,
        operators=operators,
        return_origins=[UI],
        transport=httpx.MockTransport(op),
    )
    return create_codec_app(
        AesGcmCodec(PAYLOAD_KEY), auth=CodecAuth(signin=signin, browser_origins=[UI]), cors_origins=[UI]
    )


ALICE = OperatorRule(frozenset({"alice"}))


async def sign_in_with(
    op: MockOP, operators: OperatorRule = ALICE, public_url: str = PUBLIC_URL, clock: Any = time.time
) -> httpx.Response:
    """/login then /callback in one browser; the callback's answer (a session cookie if it worked)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_with(op, operators, public_url, clock)), base_url=public_url
    ) as browser:
        login = await browser.get("/login")
        query = parse_qs(urlsplit(login.headers["location"]).query)
        op.challenge, op.nonce = query["code_challenge"][0], query["nonce"][0]
        callback = await browser.get("/callback", params={"code": "the-code", "state": query["state"][0]})
        if callback.status_code == 200:
            plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"plaintext"')
            body = json_format.MessageToJson(Payloads(payloads=await AesGcmCodec(PAYLOAD_KEY).encode([plain])))
            decoded = await browser.post("/decode", content=body, headers={"origin": UI})
            assert decoded.status_code == 200 and b"plaintext" in base64.b64decode(
                decoded.json()["payloads"][0]["data"]
            )
        return callback


def has_session(response: httpx.Response) -> bool:
    return any(cookie.startswith("ciba-codec-session=") for cookie in response.headers.get_list("set-cookie"))


async def test_a_valid_id_token_of_an_operator_opens_a_session() -> None:
    op = MockOP(lambda nonce: id_token(nonce))
    callback = await sign_in_with(op)
    assert callback.status_code == 200 and has_session(callback)
    [form] = op.forms
    assert form["grant_type"] == ["authorization_code"] and form["redirect_uri"] == [PUBLIC_URL + "/callback"]


async def test_on_https_the_cookies_are_secure_and_host_bound() -> None:
    """`__Host-`: the browser keeps it only if Secure, for this host alone, Path=/ (no Domain)."""
    callback = await sign_in_with(MockOP(lambda nonce: id_token(nonce)), public_url="https://localhost:8081")
    assert callback.status_code == 200
    [session] = [c for c in callback.headers.get_list("set-cookie") if c.startswith("__Host-ciba-codec-session=")]
    attributes = [part.strip().lower() for part in session.split(";")]
    assert {"secure", "httponly", "path=/", "samesite=lax"} <= set(attributes)
    assert not any(part.startswith("domain=") for part in attributes)


REFUSED: dict[str, Callable[[str], str]] = {
    "another nonce": lambda nonce: id_token("n-" + nonce),
    "no nonce": lambda nonce: id_token(nonce, nonce=None),
    "another audience": lambda nonce: id_token(nonce, aud="another-client"),
    "a second audience without azp": lambda nonce: id_token(nonce, aud=[CLIENT_ID, "another-client"]),
    "azp of another client": lambda nonce: id_token(nonce, azp="another-client"),
    "another issuer": lambda nonce: id_token(nonce, iss="https://evil.example"),
    "expired": lambda nonce: id_token(nonce, exp=int(time.time()) - 3600),
    "no exp": lambda nonce: id_token(nonce, exp=None),
    "issued an hour ago": lambda nonce: id_token(nonce, iat=int(time.time()) - 3600),
    "no sub": lambda nonce: id_token(nonce, sub=None),
    "signed by another key": lambda nonce: id_token(nonce, key=OTHER_KEY),
    "HS256 with the public key's bytes": lambda nonce: id_token(nonce, key="k" * 32, alg="HS256"),
    "alg none": lambda nonce: id_token(nonce, key=None, alg="none"),
    # Issued before the sign-in's window: ID_TOKEN_MAX_AGE (600 s) and the leeway (60 s) ago, and more.
    "issued 690 s ago": lambda nonce: id_token(nonce, iat=int(time.time()) - 690),
    "an empty sub": lambda nonce: id_token(nonce, sub=""),
    "a sub with a line break": lambda nonce: id_token(nonce, sub="alice\nadmin"),
    "a sub that is a number": lambda nonce: id_token(nonce, sub=7),
    "a kid that is a number": lambda nonce: with_header(id_token(nonce), kid=7),
}


ADMITTED: dict[str, Callable[[str], str]] = {
    "two audiences, azp naming this client": lambda nonce: id_token(nonce, aud=[CLIENT_ID, "other"], azp=CLIENT_ID),
    "issued 630 s ago, within the leeway": lambda nonce: id_token(nonce, iat=int(time.time()) - 630),
    "signed again with its own kid": lambda nonce: with_header(
        id_token(nonce), kid="k1"
    ),  # with_header's tokens verify
}


@pytest.mark.parametrize("token", sorted(ADMITTED))
async def test_an_id_token_within_every_rule_opens_a_session(token: str) -> None:
    callback = await sign_in_with(MockOP(ADMITTED[token]))
    assert callback.status_code == 200 and has_session(callback), callback.text


async def test_an_id_token_issued_exactly_max_age_and_leeway_ago_still_opens_a_session() -> None:
    now = float(int(time.time()))
    callback = await sign_in_with(MockOP(lambda nonce: id_token(nonce, iat=int(now) - 600 - 60)), clock=lambda: now)
    assert callback.status_code == 200 and has_session(callback), callback.text


@pytest.mark.parametrize("forgery", sorted(REFUSED))
async def test_an_id_token_that_fails_a_rule_opens_no_session(forgery: str) -> None:
    callback = await sign_in_with(MockOP(REFUSED[forgery]))
    assert callback.status_code == 401 and not has_session(callback), callback.text


async def test_pkce_is_checked_by_the_op_with_the_verifier_only_the_server_knows() -> None:
    op = MockOP(lambda nonce: id_token(nonce))
    op_call = op.__call__

    async def tampered(request: httpx.Request) -> httpx.Response:
        op.challenge = "not-the-challenge"  # the OP saw another challenge: the code was issued to someone else
        return await op_call(request)

    op.__call__ = tampered  # type: ignore[method-assign]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_with(op, ALICE)), base_url=PUBLIC_URL
    ) as browser:
        login = await browser.get("/login")
        query = parse_qs(urlsplit(login.headers["location"]).query)
        op.nonce = query["nonce"][0]
        callback = await browser.get("/callback", params={"code": "c", "state": query["state"][0]})
    assert callback.status_code == 401 and not has_session(callback)


@pytest.mark.parametrize(
    ("claims", "admitted"),
    [
        ({"groups": ["staff", "temporal-operators"]}, True),
        ({"groups": "temporal-operators"}, True),
        ({"groups": ["staff"]}, False),
        ({}, False),
    ],
)
async def test_an_operator_claim_admits_its_holders(claims: dict[str, Any], admitted: bool) -> None:
    op = MockOP(lambda nonce: id_token(nonce, sub="carol", **claims))
    callback = await sign_in_with(op, OperatorRule(frozenset({"alice"}), ("groups", "temporal-operators")))
    assert has_session(callback) is admitted
    assert callback.status_code == (200 if admitted else 403)


def test_a_sealed_cookie_opens_only_as_its_own_kind() -> None:
    sealer = Sealer()
    sealed = sealer.seal("ciba-codec-login", {"state": "s"})
    assert sealer.open("ciba-codec-login", sealed) == {"state": "s"}
    assert sealer.open("ciba-codec-session", sealed) is None
    assert Sealer().open("ciba-codec-login", sealed) is None  # another server's key
    assert "state" not in sealed and "s" not in base64.urlsafe_b64decode(sealed + "==").decode("latin-1")[12:14]


# Settings -------------------------------------------------------------------------------------

SIGNIN = {
    "CIBA_PAYLOAD_KEY": base64.b64encode(PAYLOAD_KEY).decode(),
    "CIBA_CODEC_OIDC_ISSUER": "http://127.0.0.1:3000",
    "CIBA_CODEC_SIGNIN_CLIENT_ID": CLIENT_ID,
    "CIBA_CODEC_PUBLIC_URL": "http://localhost:8081",
    "CIBA_CODEC_OPERATORS": "alice",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., CodecServerSettings]]:
    def load(**values: str | None) -> CodecServerSettings:
        for name, value in {**SIGNIN, **values}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return CodecServerSettings()  # type: ignore[call-arg]

    yield load  # type: ignore[misc]


def test_sign_in_alone_is_a_way_to_authenticate(environment: Callable[..., CodecServerSettings]) -> None:
    settings = environment()
    assert settings.signin and settings.codec_operators == ["alice"] and settings.codec_oidc_audience == []


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"CIBA_CODEC_OPERATORS": None}, "CIBA_CODEC_OPERATORS or CIBA_CODEC_OPERATOR_CLAIM"),
        ({"CIBA_CODEC_PUBLIC_URL": None}, "CIBA_CODEC_PUBLIC_URL"),
        ({"CIBA_CODEC_OIDC_ISSUER": None}, "CIBA_CODEC_OIDC_ISSUER"),
        ({"CIBA_CODEC_SESSION_SAME_SITE": "none"}, "CIBA_CODEC_SESSION_SAME_SITE=none"),
    ],
    ids=["no operators", "no public URL", "no issuer", "SameSite=None over http"],
)
def test_an_incomplete_sign_in_is_refused_at_start(
    environment: Callable[..., CodecServerSettings], values: dict[str, str | None], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        environment(**values)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CIBA_CODEC_PUBLIC_URL", "http://codec.example.com"),
        ("CIBA_CODEC_PUBLIC_URL", "http://localhost:8081/?next=x"),
        ("CIBA_CODEC_SESSION_KEY", "c2hvcnQ="),
        ("CIBA_CODEC_SESSION_SECONDS", "999999"),
    ],
)
def test_malformed_sign_in_settings_are_refused(
    environment: Callable[..., CodecServerSettings], name: str, value: str
) -> None:
    with pytest.raises((ConfigError, ValueError)):
        environment(**{name: value})


async def test_an_op_that_cannot_be_reached_is_a_503_in_one_line() -> None:
    async def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    signin = BrowserSignIn(
        issuer=ISSUER,
        client_id=CLIENT_ID,
        client_secret=None,
        public_url=PUBLIC_URL,
        operators=ALICE,
        return_origins=[UI],
        transport=httpx.MockTransport(down),
    )
    app = create_codec_app(
        AesGcmCodec(PAYLOAD_KEY), auth=CodecAuth(signin=signin, browser_origins=[UI]), cors_origins=[UI]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as browser:
        response = await browser.get("/login")
    assert response.status_code == 503 and list(response.json()) == ["error"]
