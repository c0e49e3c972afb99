"""The codec server's rules, in the test process: its app over ASGI.

The OIDC issuer and the OP answer behind httpx.MockTransport (tests/support/codec_app.py).

Who may decode (operator tokens, the issuer's access tokens, a signed-in browser from the UI's
origin), the Host and Origin guard, CORS, which payloads it decodes, encodes and refuses, its
body limits and read deadline, the browser sign-in's steps, and the app built from settings.
tests/security/test_codec_server.py and test_codec_signin.py hold the same rules against the
`temporal-ciba codec-server` process; these run where mutation testing sees them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from temporalio.api.common.v1 import Payload, Payloads

from temporal_ciba._programs import codec_server
from temporal_ciba._programs.codec_server import (
    MAX_TOKEN_CHARS,
    CodecAuth,
    OidcAccessTokens,
    OperatorTokens,
    codec_app_from_settings,
    create_codec_app,
    host_name,
)
from temporal_ciba._programs.codec_server_settings import CodecServerSettings
from temporal_ciba._programs.codec_signin import (
    MAX_QUERY_CHARS,
    BrowserSignIn,
    OperatorRule,
    Sealer,
    _Spent,
)
from temporal_ciba._settings import ConfigError
from temporal_ciba.ciba import JwksCache
from temporal_ciba.crypto import AesGcmCodec
from temporal_ciba.crypto._codec import ENCODING, KEY_ID_METADATA
from tests.support.codec_app import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    EC_KEY,
    ISSUER,
    KEY,
    OPERATOR_TOKEN,
    PAYLOAD_KEY,
    PUBLIC_URL,
    SECOND_KEY,
    SECOND_OPERATOR_TOKEN,
    SECRET,
    UI,
    FakeIssuer,
    access_token,
    asgi_call,
    encrypted_body,
    id_token,
    jwk,
    payloads_of,
    resigned,
)

LOGGER = "temporal_ciba.codec_server"
REALM = 'Bearer realm="temporal-ciba codec server", error="invalid_token"'


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def client(app: Starlette, base_url: str = PUBLIC_URL) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def operator_app(tokens: tuple[str, ...] = (OPERATOR_TOKEN, SECOND_OPERATOR_TOKEN), **options: Any) -> Starlette:
    return create_codec_app(AesGcmCodec(PAYLOAD_KEY), auth=CodecAuth(tokens), cors_origins=[UI], **options)


def oidc_of(issuer: FakeIssuer, **options: Any) -> OidcAccessTokens:
    return OidcAccessTokens(ISSUER, [AUDIENCE, "second-audience"], transport=issuer.transport(), **options)


def oidc_app(issuer: FakeIssuer, **options: Any) -> Starlette:
    return create_codec_app(
        AesGcmCodec(PAYLOAD_KEY), auth=CodecAuth(oidc=oidc_of(issuer, **options)), cors_origins=[UI]
    )


async def decode_with(app: Starlette, token: str) -> httpx.Response:
    async with client(app) as http:
        return await http.post("/decode", content=await encrypted_body(), headers=bearer(token))


def refused(response: httpx.Response, status: int) -> bool:
    """`status`, one JSON line {"error": ...}, and no plaintext."""
    return (
        response.status_code == status
        and list(response.json()) == ["error"]
        and len(response.content.splitlines()) == 1
        and SECRET not in response.content
    )


# Operator tokens --------------------------------------------------------------------------------


async def test_an_operator_token_decodes() -> None:
    """Rule: a configured operator token opens /decode; the answer is the plaintext payloads."""
    response = await decode_with(operator_app(), OPERATOR_TOKEN)
    assert response.status_code == 200
    [payload] = payloads_of(response)
    assert payload.data == SECRET and payload.metadata["encoding"] == b"json/plain"


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {SECOND_OPERATOR_TOKEN}", f"bearer {OPERATOR_TOKEN}", f"  BEARER   {OPERATOR_TOKEN}  "],
    ids=["every configured token", "scheme in any case", "spaces around"],
)
async def test_each_operator_token_in_any_spelling_of_the_scheme_decodes(authorization: str) -> None:
    """Rule: every configured token matches, the scheme is case-insensitive, spaces around are dropped."""
    async with client(operator_app()) as http:
        response = await http.post("/decode", content=await encrypted_body(), headers={"authorization": authorization})
    assert response.status_code == 200 and payloads_of(response)[0].data == SECRET


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer    ",
        f"Bearer{OPERATOR_TOKEN}",
        f"Basic {OPERATOR_TOKEN}",
        f"Token {OPERATOR_TOKEN}",
        "Bearer wrong-token-of-a-plausible-length-0123456789",
        f"Bearer {OPERATOR_TOKEN[:-1]}",
        f"Bearer {OPERATOR_TOKEN}x",
        "Bearer a.b.c",
    ],
    ids=[
        "none",
        "empty",
        "no token",
        "blank token",
        "no space",
        "basic",
        "other scheme",
        "wrong",
        "prefix",
        "longer",
        "jwt-like",
    ],
)
async def test_anything_but_an_operator_token_is_a_401_with_the_realm(authorization: str | None) -> None:
    """Rule: without a valid bearer token, 401 with WWW-Authenticate naming the realm, no plaintext."""
    headers = {} if authorization is None else {"authorization": authorization}
    async with client(operator_app()) as http:
        response = await http.post("/decode", content=await encrypted_body(), headers=headers)
    assert refused(response, 401), response.text
    assert response.headers["www-authenticate"] == REALM


async def test_a_token_longer_than_the_limit_is_refused_even_if_configured() -> None:
    """Rule: a bearer token over MAX_TOKEN_CHARS is refused before it is compared or parsed."""
    at_limit, beyond = "a" * MAX_TOKEN_CHARS, "b" * (MAX_TOKEN_CHARS + 1)
    app = operator_app((at_limit, beyond))
    assert (await decode_with(app, at_limit)).status_code == 200
    assert refused(await decode_with(app, beyond), 401)


def test_operator_tokens_keep_only_digests_and_match_each() -> None:
    """Rule: each configured token matches, nothing else does, and repr shows none of them.

    No early exit stops at the first token; neither the tokens nor their digests are shown."""
    tokens = OperatorTokens([OPERATOR_TOKEN, SECOND_OPERATOR_TOKEN])
    assert tokens.matches(OPERATOR_TOKEN) and tokens.matches(SECOND_OPERATOR_TOKEN)
    assert not tokens.matches(OPERATOR_TOKEN + " ") and not tokens.matches("")
    assert repr(tokens) == "OperatorTokens(2 tokens)"
    assert bool(tokens) and not OperatorTokens([])


def test_the_server_needs_a_way_to_authenticate() -> None:
    """Rule: CodecAuth with no operator token, no issuer and no sign-in is refused."""
    with pytest.raises(ValueError, match="needs operator tokens"):
        CodecAuth()
    with pytest.raises(ValueError, match="needs operator tokens"):
        CodecAuth([], None, None)
    assert CodecAuth(oidc=oidc_of(FakeIssuer())).oidc is not None


async def test_the_log_names_who_decoded(caplog: pytest.LogCaptureFixture) -> None:
    """Rule: each decode is logged with its caller (operator token, access token's sub, session's sub)."""
    issuer = FakeIssuer()
    app = create_codec_app(
        AesGcmCodec(PAYLOAD_KEY), auth=CodecAuth([OPERATOR_TOKEN], oidc_of(issuer)), cors_origins=[UI]
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert (await decode_with(app, OPERATOR_TOKEN)).status_code == 200
        assert (await decode_with(app, access_token(sub="operator-7"))).status_code == 200
    lines = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert lines == [
        "codec server: /decode of 1 payloads for operator token",
        "codec server: /decode of 1 payloads for sub='operator-7'",
    ]


async def test_refusals_of_callers_are_logged_and_bad_input_is_not(caplog: pytest.LogCaptureFixture) -> None:
    """Rule: a 401 or 403 is logged (who tried), a 400 is not."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        async with client(operator_app()) as http:
            assert (await http.post("/decode", content=b"{}")).status_code == 401
            assert (
                await http.post("/encode", content=await encrypted_body(), headers=bearer(OPERATOR_TOKEN))
            ).status_code == 403
            assert (await http.post("/decode", content=b"not json", headers=bearer(OPERATOR_TOKEN))).status_code == 400
    lines = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert len(lines) == 2 and lines[0].startswith("codec server refused POST /decode: ")
    assert lines[1].startswith("codec server refused POST /encode: ")


# The issuer's access tokens -------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
async def test_an_access_token_of_the_issuer_decodes(typ: str) -> None:
    """Rule: an RFC 9068 access token (typ at+jwt, any case, application/ prefix) of the issuer for an audience."""
    response = await decode_with(oidc_app(FakeIssuer()), access_token(typ=typ))
    assert response.status_code == 200 and payloads_of(response)[0].data == SECRET


@pytest.mark.parametrize("typ", ["JWT", None, "id_token+jwt", "at+jwt\n", "dpop+jwt", 7])
async def test_a_token_of_another_type_is_refused_without_asking_the_issuer(typ: Any) -> None:
    """Rule: typ must be an access token's, checked before any key is fetched.

    An ID token for the audience (typ JWT or none) is not an access token."""
    issuer = FakeIssuer()
    token = access_token(typ=typ) if isinstance(typ, str | None) else resigned(access_token(), KEY, typ=typ)
    response = await decode_with(oidc_app(issuer), token)
    assert refused(response, 401) and "not an access token" in response.json()["error"]
    assert response.headers["www-authenticate"] == REALM and issuer.requests == []


@pytest.mark.parametrize(
    "token",
    [
        lambda: access_token(key="k" * 32, alg="HS256"),
        lambda: access_token(key=None, alg="none"),
        lambda: access_token(alg="RS384"),
        lambda: resigned(access_token(), KEY, kid=7),
        lambda: resigned(access_token(), KEY, kid=["k1"]),
        lambda: "not-a.jwt.at-all",
        lambda: "e30.e30",
    ],
    ids=["HS256", "none", "an algorithm not configured", "kid a number", "kid a list", "not a JWT", "two parts"],
)
async def test_a_malformed_header_is_refused_without_asking_the_issuer(token: Callable[[], str]) -> None:
    """Rule: only RS256, PS256, ES256 (as configured), a string kid, a JWT: else 401, and the issuer is not asked."""
    issuer = FakeIssuer()
    response = await decode_with(oidc_app(issuer), token())
    assert refused(response, 401) and issuer.requests == []


@pytest.mark.parametrize(
    ("key", "alg", "keys"),
    [(KEY, "PS256", [jwk(KEY, alg="PS256")]), (EC_KEY, "ES256", [jwk(EC_KEY, alg="ES256")])],
    ids=["PS256", "ES256"],
)
async def test_rsa_pss_and_ec_signatures_are_accepted(key: Any, alg: str, keys: list[dict[str, Any]]) -> None:
    """Rule: the default algorithms are RS256, PS256 and ES256."""
    response = await decode_with(oidc_app(FakeIssuer(key_sets=[keys])), access_token(key=key, alg=alg))
    assert response.status_code == 200


async def test_only_the_configured_algorithms_are_accepted() -> None:
    """Rule: an algorithm outside `algorithms` is refused even with a key that verifies it."""
    issuer = FakeIssuer(key_sets=[[jwk(KEY, alg="RS256"), jwk(KEY, kid="k2", alg="PS256")]])
    app = oidc_app(issuer, algorithms=("PS256",))
    assert refused(await decode_with(app, access_token()), 401)
    assert (await decode_with(app, access_token(alg="PS256", kid="k2"))).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-audience"},
        {"iss": "https://evil.example"},
        {"exp": int(time.time()) - 3600},
        {"exp": None},
        {"iss": None},
        {"aud": None},
        {"nbf": int(time.time()) + 3600},
    ],
    ids=["another audience", "another issuer", "expired", "no exp", "no iss", "no aud", "not yet valid"],
)
async def test_a_token_failing_a_claim_rule_is_refused(claims: dict[str, Any]) -> None:
    """Rule: audience one of ours, the issuer's iss, exp present and unexpired (iss, aud, exp required)."""
    assert refused(await decode_with(oidc_app(FakeIssuer()), access_token(**claims)), 401)


async def test_any_configured_audience_is_accepted() -> None:
    """Rule: the token's aud may be any of the configured audiences."""
    app = oidc_app(FakeIssuer())
    assert (await decode_with(app, access_token(aud="second-audience"))).status_code == 200
    assert (await decode_with(app, access_token(aud=["x", AUDIENCE]))).status_code == 200


async def test_expiry_allows_the_leeway_and_no_more() -> None:
    """Rule: a token expired less than `leeway_seconds` ago passes; with no leeway it does not."""
    expired = access_token(exp=int(time.time()) - 30)
    assert (await decode_with(oidc_app(FakeIssuer()), expired)).status_code == 200
    assert refused(await decode_with(oidc_app(FakeIssuer(), leeway_seconds=0), expired), 401)
    assert refused(await decode_with(oidc_app(FakeIssuer()), access_token(exp=int(time.time()) - 90)), 401)


async def test_a_token_signed_by_another_key_is_refused() -> None:
    """Rule: the signature must verify with one of the issuer's keys."""
    response = await decode_with(oidc_app(FakeIssuer()), access_token(key=SECOND_KEY))
    assert refused(response, 401) and "signature" in response.json()["error"]


async def test_every_key_that_fits_is_tried() -> None:
    """Rule: without a kid, each of the issuer's keys is tried in turn until one verifies."""
    issuer = FakeIssuer(key_sets=[[jwk(SECOND_KEY, kid=None), jwk(KEY, kid=None)]])
    assert (await decode_with(oidc_app(issuer), access_token(kid=None))).status_code == 200


async def test_keys_are_fetched_once_and_again_only_for_an_unknown_kid() -> None:
    """Rule: a known kid uses the cached keys; an unknown one refetches them once (a rotated-in key)."""
    issuer = FakeIssuer(key_sets=[[jwk(KEY)], [jwk(KEY), jwk(SECOND_KEY, kid="k2")]])
    oidc = oidc_of(issuer)
    oidc._jwks = JwksCache(oidc._fetch_jwks, min_refetch_seconds=0.0)  # no cool-down: the rule, not the cache
    app = create_codec_app(AesGcmCodec(PAYLOAD_KEY), auth=CodecAuth(oidc=oidc), cors_origins=[UI])
    assert (await decode_with(app, access_token())).status_code == 200
    assert (await decode_with(app, access_token())).status_code == 200
    assert issuer.jwks_fetches == 1 and issuer.paths().count("/.well-known/openid-configuration") == 1
    assert (await decode_with(app, access_token(key=SECOND_KEY, kid="k2"))).status_code == 200
    assert issuer.jwks_fetches == 2
    assert refused(await decode_with(app, access_token(kid="k3")), 401) and issuer.jwks_fetches == 3


async def test_every_request_to_the_issuer_has_the_timeout_and_no_redirect_is_followed() -> None:
    """Rule: discovery and keys are fetched with the configured timeouts, and a redirect is refused (503)."""
    issuer = FakeIssuer()
    app = oidc_app(issuer, timeout=httpx.Timeout(3.0, connect=1.0))
    assert (await decode_with(app, access_token())).status_code == 200
    expected = {"connect": 1.0, "read": 3.0, "write": 3.0, "pool": 3.0}
    assert [request.extensions["timeout"] for request in issuer.requests] == [expected, expected]
    moved = FakeIssuer(discovery={"jwks_uri": ISSUER + "/moved"})
    response = await decode_with(oidc_app(moved), access_token())
    assert refused(response, 503) and moved.paths() == ["/.well-known/openid-configuration", "/moved"]


async def test_an_issuer_that_cannot_be_reached_is_a_503(caplog: pytest.LogCaptureFixture) -> None:
    """Rule: the issuer's keys unavailable is 503 in one line (try again), logged as a warning."""
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        response = await decode_with(oidc_app(FakeIssuer(down=True)), access_token())
    assert response.json() == {"error": "the OIDC issuer's keys could not be loaded; try again later"}
    assert [record.levelno for record in caplog.records if record.name == LOGGER] == [logging.WARNING]


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"scope": "openid codec:decode"}, 200),
        ({"scp": ["codec:decode", "x"]}, 200),
        ({"scope": ["codec:decode"]}, 200),
        ({"scope": "openid"}, 403),
        ({}, 403),
        ({"scope": 7}, 403),
        ({"scope": "codec:decode-more"}, 403),
        ({"scope": "openid", "scp": ["codec:decode"]}, 403),
    ],
    ids=[
        "in scope",
        "in scp",
        "scope a list",
        "other scope",
        "none",
        "scope a number",
        "a longer name",
        "scope over scp",
    ],
)
async def test_a_required_scope_must_be_granted(claims: dict[str, Any], status: int) -> None:
    """Rule: with required_scope, the token's scope (space-separated or a list; else scp) must hold it: else 403."""
    response = await decode_with(oidc_app(FakeIssuer(), required_scope="codec:decode"), access_token(**claims))
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("claims", "status"),
    [({"typ": "Bearer"}, 200), ({"typ": "ID"}, 401), ({}, 401)],
    ids=["held", "another value", "missing"],
)
async def test_a_required_claim_tells_access_tokens_apart(claims: dict[str, Any], status: int) -> None:
    """Rule: with token_types JWT (Keycloak), the configured claim must hold its value."""
    app = oidc_app(FakeIssuer(), token_types=("JWT",), required_claim=("typ", "Bearer"))
    response = await decode_with(app, access_token(typ="JWT", claims=claims))
    assert response.status_code == status
    assert refused(await decode_with(app, access_token(typ="at+jwt", claims=claims)), 401)


def test_an_issuer_needs_an_audience() -> None:
    """Rule: OidcAccessTokens without an audience is refused; its repr names issuer and audiences only."""
    with pytest.raises(ValueError, match="audience"):
        OidcAccessTokens(ISSUER, [])
    assert (
        repr(oidc_of(FakeIssuer()))
        == f"OidcAccessTokens(issuer={ISSUER!r}, audiences=['{AUDIENCE}', 'second-audience'])"
    )


async def test_an_operator_token_is_checked_before_the_issuer_and_opaque_tokens_never_reach_it() -> None:
    """Rule: only a three-part token goes to the issuer; a wrong opaque one is 401 without a fetch."""
    issuer = FakeIssuer()
    app = create_codec_app(
        AesGcmCodec(PAYLOAD_KEY), auth=CodecAuth([OPERATOR_TOKEN], oidc_of(issuer)), cors_origins=[UI]
    )
    assert (await decode_with(app, OPERATOR_TOKEN)).status_code == 200
    assert refused(await decode_with(app, "opaque-token-0123456789abcdef-0123456789"), 401)
    assert refused(await decode_with(app, "a.b.c.d"), 401)
    assert issuer.requests == []


# Host and Origin --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("LOCALHOST:8081", "localhost"),
        ("[::1]:8081", "::1"),
        ("[::1]", "::1"),
        (" 127.0.0.1 ", "127.0.0.1"),
        ("codec.example.com", "codec.example.com"),
        ("codec.example.com:443", "codec.example.com"),
        ("localhost:evil:80", "localhost:evil"),
        ("[::1]]:80", "::1"),
    ],
)
def test_host_name_drops_port_brackets_and_case(header: str, name: str) -> None:
    """Rule: the Host header's name, lowercase, without port or IPv6 brackets.

    The port is what follows the last colon; a bracketed name ends at the first closing bracket."""
    assert host_name(header) == name


async def post_raw(app: Starlette, headers: list[tuple[str, str]], path: str = "/decode") -> Any:
    return await asgi_call(
        app,
        "POST",
        path,
        headers=[("authorization", f"Bearer {OPERATOR_TOKEN}"), *headers],
        chunks=[await encrypted_body()],
    )


@pytest.mark.parametrize(
    "hosts",
    [["127.0.0.1:8081"], ["localhost"], ["[::1]:8081"], ["localhost.:8081"], ["LocalHost"]],
    ids=["loopback address", "localhost", "IPv6 loopback", "trailing dot", "any case"],
)
async def test_the_servers_own_host_names_are_answered(hosts: list[str]) -> None:
    """Rule: by default localhost, 127.0.0.1 and ::1 (any port, any case, a trailing dot)."""
    response = await post_raw(operator_app(), [("host", host) for host in hosts])
    assert response.status == 200


@pytest.mark.parametrize(
    "hosts",
    [
        ["evil.example"],
        ["attacker.localhost"],
        [],
        ["localhost", "evil.example"],
        ["localhost", "localhost"],
        [""],
        ["localhost:evil:80"],
    ],
    ids=["another name", "a subdomain", "none", "two, one bad", "two", "empty", "two colons"],
)
async def test_a_host_that_is_not_ours_is_a_421(hosts: list[str]) -> None:
    """Rule: exactly one Host header naming this server, else 421 (DNS rebinding) before authentication."""
    response = await post_raw(operator_app(), [("host", host) for host in hosts])
    assert response.status == 421 and response.json() == {"error": "this server does not answer to that Host"}


async def test_configured_host_names_replace_the_defaults() -> None:
    """Rule: allowed_hosts are compared lowercase, without brackets or a trailing dot."""
    app = operator_app(allowed_hosts=["Codec.Example.COM.", "[::2]"])
    assert (await post_raw(app, [("host", "codec.example.com:8081")])).status == 200
    assert (await post_raw(app, [("host", "[::2]:8081")])).status == 200
    assert (await post_raw(app, [("host", "localhost")])).status == 421


@pytest.mark.parametrize(
    ("origins", "status"),
    [
        ([UI], 200),
        ([], 200),
        (["https://evil.example"], 403),
        ([UI, "https://evil.example"], 403),
        ([UI + "/"], 403),
        ([PUBLIC_URL], 403),
    ],
    ids=["the UI", "none", "another site", "two, one bad", "not exactly", "its own without sign-in"],
)
async def test_an_origin_that_is_not_the_uis_is_a_403(origins: list[str], status: int) -> None:
    """Rule: every Origin header must be one of the UI's origins (a page of another site gets 403)."""
    response = await post_raw(operator_app(), [("host", "localhost"), *(("origin", origin) for origin in origins)])
    assert response.status == status
    if status == 403:
        assert response.json() == {"error": "this origin may not call the codec server"}


async def test_lifespan_passes_the_guard() -> None:
    """Rule: the guard looks at HTTP requests only; the app's lifespan goes through it."""
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await operator_app()({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [message["type"] for message in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# CORS -------------------------------------------------------------------------------------------


async def test_the_uis_preflight_is_answered_with_credentials_for_its_origin() -> None:
    """Rule: CORS for the UI's origins only: POST, its three headers, credentials, cached 600 s; no token needed."""
    async with client(operator_app()) as http:
        preflight = await http.options(
            "/decode",
            headers={
                "origin": UI,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-namespace,authorization",
            },
        )
        other_header = await http.options(
            "/decode",
            headers={
                "origin": UI,
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-other",
            },
        )
        put = await http.options("/decode", headers={"origin": UI, "access-control-request-method": "PUT"})
        decoded = await http.post(
            "/decode", content=await encrypted_body(), headers={"origin": UI, **bearer(OPERATOR_TOKEN)}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == UI
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert preflight.headers["access-control-max-age"] == "600"
    assert {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")} == {"POST"}
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].lower().split(",")}
    assert {"content-type", "x-namespace", "authorization"} <= allowed
    assert other_header.status_code == 400 and put.status_code == 400
    assert decoded.status_code == 200 and decoded.headers["access-control-allow-origin"] == UI


# Payloads ---------------------------------------------------------------------------------------


async def test_encoding_is_off_unless_allowed_but_nothing_encodes_to_nothing() -> None:
    """Rule: /encode of any payload is 403 unless allow_encode; an empty list is answered empty."""
    plain = json_format.MessageToJson(Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b"1")]))
    async with client(operator_app()) as http:
        off = await http.post("/encode", content=plain, headers=bearer(OPERATOR_TOKEN))
        empty = await http.post("/encode", content=b'{"payloads": []}', headers=bearer(OPERATOR_TOKEN))
        bare = await http.post("/encode", content=b"{}", headers=bearer(OPERATOR_TOKEN))
        decoded_empty = await http.post("/decode", content=b"{}", headers=bearer(OPERATOR_TOKEN))
    assert refused(off, 403) and "CIBA_CODEC_ALLOW_ENCODE" in off.json()["error"]
    assert (
        empty.json() == {"payloads": []}
        and bare.json() == {"payloads": []}
        and decoded_empty.json() == {"payloads": []}
    )
    assert empty.status_code == bare.status_code == decoded_empty.status_code == 200


async def test_with_encoding_allowed_the_server_encrypts_under_its_key() -> None:
    """Rule: allow_encode turns /encode on; its ciphertext decodes with the payload key."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=SECRET)
    async with client(operator_app(allow_encode=True)) as http:
        response = await http.post(
            "/encode", content=json_format.MessageToJson(Payloads(payloads=[plain])), headers=bearer(OPERATOR_TOKEN)
        )
    assert response.status_code == 200
    [encrypted] = payloads_of(response)
    assert encrypted.metadata["encoding"] == ENCODING and SECRET not in encrypted.data
    assert (await AesGcmCodec(PAYLOAD_KEY).decode([encrypted]))[0].data == SECRET


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b'{"payloads": [{"data": "\xff\xfe"}]}',
        b'{"payloads": 7}',
        b'{"payloads": [{"data": 1e999999}]}',
        b'{"payloads": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"other": []}',
        json.dumps({"payloads": [{"metadata": {"encoding": _b64(ENCODING)}, "data": _b64(b"x" * 40)}]}).encode(),
    ],
    ids=[
        "not JSON",
        "empty",
        "invalid UTF-8",
        "not a list",
        "huge number",
        "deep nesting",
        "unknown field",
        "no key id",
    ],
)
async def test_a_malformed_body_is_a_400_in_one_line(body: bytes) -> None:
    """Rule: a body that is not protobuf-JSON payloads, or a payload that does not decrypt, is 400."""
    async with client(operator_app()) as http:
        response = await http.post("/decode", content=body, headers=bearer(OPERATOR_TOKEN))
    assert refused(response, 400), response.text


async def test_a_payload_of_another_key_or_altered_is_a_400() -> None:
    """Rule: a decryption failure (another key id, a changed byte) is 400 saying so, never 500."""
    other = await encrypted_body(key=bytes(32))
    sealed = json_format.Parse(await encrypted_body(), Payloads())
    data = bytearray(sealed.payloads[0].data)
    data[-1] ^= 1
    sealed.payloads[0].data = bytes(data)
    async with client(operator_app()) as http:
        for body, says in (
            (other, "encrypted with key"),
            (json_format.MessageToJson(sealed).encode(), "authentication"),
        ):
            response = await http.post("/decode", content=body, headers=bearer(OPERATOR_TOKEN))
            assert refused(response, 400) and says in response.json()["error"]


async def test_an_unknown_path_or_method_is_json() -> None:
    """Rule: Starlette's own 404 and 405 come as {"error": ...}, with its headers (Allow)."""
    async with client(operator_app()) as http:
        missing = await http.post("/nothing", headers=bearer(OPERATOR_TOKEN))
        get = await http.get("/decode", headers=bearer(OPERATOR_TOKEN))
        home = await http.get("/")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert get.status_code == 405 and get.json() == {"error": "Method Not Allowed"} and get.headers["allow"] == "POST"
    assert home.status_code == 404  # without sign-in there is no page


# Limits -----------------------------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_a_413_before_reading() -> None:
    """Rule: Content-Length over max_body_bytes is 413 without a byte read; at the limit it is read."""
    app = operator_app(max_body_bytes=1024)
    auth = ("authorization", f"Bearer {OPERATOR_TOKEN}")
    over = await asgi_call(app, headers=[("host", "localhost"), auth, ("content-length", "1025")], body_arrives=False)
    assert over.status == 413 and list(over.json()) == ["error"]
    at = await asgi_call(
        app, headers=[("host", "localhost"), auth, ("content-length", "1024")], chunks=[b" " * 1022 + b"{}"]
    )
    assert at.status == 200 and at.json() == {"payloads": []}


@pytest.mark.parametrize("declared", ["abc", "-1", "1e3", "\u00b2", "+12", ""])
async def test_a_malformed_content_length_is_a_400(declared: str) -> None:
    """Rule: Content-Length must be ASCII digits."""
    headers = [("host", "localhost"), ("authorization", f"Bearer {OPERATOR_TOKEN}"), ("content-length", declared)]
    response = await asgi_call(operator_app(), headers=headers, chunks=[b"{}"])
    assert response.status == 400 and list(response.json()) == ["error"]


async def test_a_streamed_body_is_cut_at_the_limit() -> None:
    """Rule: a streamed body is 413 once it passes max_body_bytes; at the limit it is read."""
    app = operator_app(max_body_bytes=1024)
    headers = [("host", "localhost"), ("authorization", f"Bearer {OPERATOR_TOKEN}")]
    over = await asgi_call(app, headers=headers, chunks=[b" " * 1000, b" " * 25, b" " * 10_000])
    assert over.status == 413 and list(over.json()) == ["error"]
    at = await asgi_call(app, headers=headers, chunks=[b" " * 1000, b" " * 22 + b"{}"])
    assert at.status == 200


async def test_a_body_that_does_not_arrive_is_a_408() -> None:
    """Rule: the body must arrive within read_timeout of the head: else 408 in one line."""
    app = operator_app(read_timeout=0.05)
    headers = [("host", "localhost"), ("authorization", f"Bearer {OPERATOR_TOKEN}"), ("content-length", "10")]
    response = await asgi_call(app, headers=headers, body_arrives=False)
    assert response.status == 408 and response.json() == {"error": "the body did not arrive within 0.05 s"}


# Property tests over the HTTP endpoints --------------------------------------------------------

surrogates = st.characters(categories=["Cs"])
any_text = st.text(st.one_of(st.characters(), surrogates), max_size=30)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        any_text,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)),
    max_leaves=12,
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


PROPERTY_BODY_LIMIT = 4096
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(_dump),
    json_values.map(lambda value: _dump({"payloads": [value]})),
    st.lists(
        st.fixed_dictionaries(
            {
                "metadata": st.fixed_dictionaries(
                    {"encoding": st.just(_b64(ENCODING)), KEY_ID_METADATA: st.binary(max_size=12).map(_b64)}
                ),
                "data": st.binary(max_size=60).map(_b64),
            }
        ),
        max_size=2,
    ).map(lambda payloads: _dump({"payloads": payloads})),
    st.integers(min_value=PROPERTY_BODY_LIMIT + 1, max_value=4 * PROPERTY_BODY_LIMIT).map(lambda size: b" " * size),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
PROPERTIES = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTIES
@given(path=st.sampled_from(["/decode", "/encode"]), body=bodies, declared=st.booleans())
async def test_no_body_from_an_operator_gets_a_5xx(path: str, body: bytes, declared: bool) -> None:
    """Property: any body (invalid UTF-8, surrogates, huge numbers, NaN, oversized) is answered below 500."""
    headers = [("host", "localhost"), ("authorization", f"Bearer {OPERATOR_TOKEN}")]
    if declared:
        headers.append(("content-length", str(len(body))))
    response = await asgi_call(
        operator_app(max_body_bytes=PROPERTY_BODY_LIMIT), "POST", path, headers=headers, chunks=[body]
    )
    assert response.status in (200, 400, 403, 413), response.body[:200]
    if response.status >= 400:
        assert list(response.json()) == ["error"]
    if len(body) > PROPERTY_BODY_LIMIT:
        assert response.status == 413


@PROPERTIES
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "OPTIONS"]),
    path=st.sampled_from(["/decode", "/encode", "/", "/login", "/unknown"]),
    authorization=st.one_of(st.none(), header_text, header_text.map(lambda t: f"Bearer {t}.{t}.{t}")),
    host=st.one_of(st.just("localhost"), header_text),
    origin=st.one_of(st.none(), st.just(UI), header_text),
    length=st.one_of(st.none(), st.integers(min_value=-(10**30), max_value=10**30).map(str), header_text),
)
async def test_no_request_from_anyone_gets_a_5xx_or_plaintext(
    method: str, path: str, authorization: str | None, host: str, origin: str | None, length: str | None
) -> None:
    """Property: any method, path, token, Host, Origin and Content-Length: below 500, never the plaintext."""
    issuer = FakeIssuer()
    headers = [("host", host)]
    for name, value in (("authorization", authorization), ("origin", origin), ("content-length", length)):
        if value is not None:
            headers.append((name, value))
    response = await asgi_call(oidc_app(issuer), method, path, headers=headers, chunks=[await encrypted_body()])
    assert response.status < 500 and SECRET not in response.body
    if method == "POST" and path in ("/decode", "/encode"):
        assert response.status in (400, 401, 403, 413, 421)


# Browser sign-in --------------------------------------------------------------------------------

ALICE = OperatorRule(frozenset({"alice"}))


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def signin_of(issuer: FakeIssuer, **options: Any) -> BrowserSignIn:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "public_url": PUBLIC_URL,
        "operators": ALICE,
        "return_origins": [UI],
        "transport": issuer.transport(),
        **options,
    }
    return BrowserSignIn(**values)


def signin_app(signin: BrowserSignIn, *, operator_tokens: tuple[str, ...] = (), **options: Any) -> Starlette:
    auth = CodecAuth(operator_tokens, signin=signin, browser_origins=[UI])
    return create_codec_app(AesGcmCodec(PAYLOAD_KEY), auth=auth, cors_origins=[UI], **options)


async def start_login(browser: httpx.AsyncClient, issuer: FakeIssuer, query: str = "") -> dict[str, list[str]]:
    login = await browser.get("/login" + query)
    assert login.status_code == 302, login.text
    return issuer.saw_login(login.headers["location"])


async def signed_in(browser: httpx.AsyncClient, issuer: FakeIssuer) -> httpx.Response:
    """/login, then the OP's redirect to /callback with a code: the callback's answer."""
    query = await start_login(browser, issuer)
    return await browser.get("/callback", params={"code": "the-code", "state": query["state"][0]})


def cookies_set(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name."""
    return {line.split("=", 1)[0]: line for line in response.headers.get_list("set-cookie")}


async def decode_from_ui(browser: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await browser.post("/decode", content=await encrypted_body(), headers={"origin": UI, **headers})


async def test_login_redirects_to_the_op_with_pkce_state_and_nonce() -> None:
    """Rule: /login redirects to the OP with code flow, PKCE S256, state and nonce.

    They are kept in a sealed, HttpOnly login cookie for /callback only, for ten minutes."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer, scope="profile"))) as browser:
        login = await browser.get("/login")
    assert login.status_code == 302 and login.headers["cache-control"] == "no-store"
    location = login.headers["location"]
    assert location.startswith(ISSUER + "/auth?")
    query = parse_qs(urlsplit(location).query)
    assert {name: values[0] for name, values in query.items() if name not in ("state", "nonce", "code_challenge")} == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": PUBLIC_URL + "/callback",
        "scope": "openid profile",
        "code_challenge_method": "S256",
    }
    state, nonce, challenge = query["state"][0], query["nonce"][0], query["code_challenge"][0]
    assert len({state, nonce, challenge}) == 3 and len(state) == len(nonce) == 43 and len(challenge) == 43
    cookie = cookies_set(login)["ciba-codec-login"]
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert attributes == {"httponly", "max-age=600", "path=/callback", "samesite=lax"}
    assert state not in cookie and nonce not in cookie


@pytest.mark.parametrize(
    ("scope", "sent"), [("openid", "openid"), ("email openid", "email openid"), ("openidx", "openid openidx")]
)
async def test_the_scope_always_holds_openid(scope: str, sent: str) -> None:
    """Rule: openid is added to the configured scope unless it is one of its words."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer, scope=scope))) as browser:
        assert (await start_login(browser, issuer))["scope"] == [sent]


async def test_an_authorization_endpoint_with_a_query_keeps_it() -> None:
    """Rule: the request's parameters are appended with & to an endpoint that has a query."""
    issuer = FakeIssuer(discovery={"authorization_endpoint": ISSUER + "/auth?tenant=a"})
    async with client(signin_app(signin_of(issuer))) as browser:
        login = await browser.get("/login")
    assert login.headers["location"].startswith(ISSUER + "/auth?tenant=a&response_type=code&")


@pytest.mark.parametrize(
    ("issuer", "says"),
    [
        (FakeIssuer(down=True), "could not be reached"),
        (FakeIssuer(discovery={"authorization_endpoint": None}), "authorization_endpoint"),
    ],
    ids=["down", "no authorization endpoint"],
)
async def test_login_without_a_usable_op_is_a_503(issuer: FakeIssuer, says: str) -> None:
    """Rule: an OP that cannot be reached, or names no authorization endpoint, is 503 (no-store)."""
    async with client(signin_app(signin_of(issuer))) as browser:
        response = await browser.get("/login")
    assert refused(response, 503) and says in response.json()["error"]
    assert response.headers["cache-control"] == "no-store"


async def test_the_op_is_discovered_once() -> None:
    """Rule: the discovery document is fetched once and kept."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
        await start_login(browser, issuer)
    assert issuer.paths().count("/.well-known/openid-configuration") == 1


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example",
        "javascript:alert(1)",
        f"{UI}@evil.example",
        "http://user@localhost:8233/",
        "http://user:pw@localhost:8233/",
        "http://localhost:8233\\@evil.example/",
        "ftp://localhost:8233/",
        "http://localhost:8233/\u00e9",
        "http://localhost:8233/\x01",
        UI + "/" + "a" * 2048,
        UI + "/\\evil.example/",
    ],
    ids=[
        "another site",
        "scheme-relative",
        "javascript",
        "userinfo host",
        "username",
        "password",
        "backslash",
        "ftp",
        "not ASCII",
        "control character",
        "too long",
        "a backslash in the path",
    ],
)
async def test_login_returns_only_to_a_page_of_the_ui(next_url: str) -> None:
    """Rule: next must be an http(s) page of the UI's origins, without userinfo or backslash (no open redirect)."""
    async with client(signin_app(signin_of(FakeIssuer()))) as browser:
        response = await browser.get("/login", params={"next": next_url})
    assert refused(response, 400), next_url


async def test_after_sign_in_the_browser_returns_to_the_ui_page() -> None:
    """Rule: a valid next is where the callback sends the browser (UI origins compared lowercase)."""
    issuer = FakeIssuer()
    back = "HTTP://LOCALHOST:8233/namespaces/default/workflows"
    async with client(signin_app(signin_of(issuer))) as browser:
        query = await start_login(browser, issuer, "?next=" + back)
        callback = await browser.get("/callback", params={"code": "c", "state": query["state"][0]})
    assert callback.status_code == 302 and callback.headers["location"] == back
    assert "ciba-codec-session" in cookies_set(callback)


async def test_a_callback_opens_a_session_that_decodes_from_the_ui_only(caplog: pytest.LogCaptureFixture) -> None:
    """Rule: a callback opens a session that decodes only with the UI's Origin.

    The session is a sealed cookie (HttpOnly, Path=/, SameSite, max-age the session's); the login
    cookie is cleared; the log names the subject."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer, session_seconds=900, same_site="strict"))) as browser:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            callback = await signed_in(browser, issuer)
            decoded = await decode_from_ui(browser)
        without_origin = await browser.post("/decode", content=await encrypted_body())
        elsewhere = await decode_from_ui(browser, origin="https://evil.example")
        home = await browser.get("/")
    assert callback.status_code == 200 and "Signed in as alice until" in callback.text
    cookies = cookies_set(callback)
    attributes = {part.strip().lower() for part in cookies["ciba-codec-session"].split(";")[1:]}
    assert attributes == {"httponly", "max-age=900", "path=/", "samesite=strict"}
    cleared = {part.strip() for part in cookies["ciba-codec-login"].split(";")[1:]}
    assert {"Max-Age=0", "Path=/callback", "HttpOnly", "SameSite=lax"} <= cleared and "Secure" not in cleared
    assert "alice" not in cookies["ciba-codec-session"]
    assert decoded.status_code == 200 and payloads_of(decoded)[0].data == SECRET
    assert refused(without_origin, 401) and refused(elsewhere, 403)
    assert home.status_code == 200 and "Signed in as alice" in home.text
    assert "codec server: /decode of 1 payloads for session of sub='alice'" in [r.getMessage() for r in caplog.records]
    assert "codec server: sub='alice' signed in" in [r.getMessage() for r in caplog.records]


async def test_the_token_request_proves_the_code_with_the_client_secret_and_the_verifier() -> None:
    """Rule: the code goes back with grant_type, redirect_uri, the PKCE verifier, and the secret as HTTP Basic."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
    [token_request] = [request for request in issuer.requests if request.url.path == "/token"]
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_request.headers["authorization"] == f"Basic {expected}"
    assert token_request.headers["accept"] == "application/json"
    form = {name: values[0] for name, values in issuer.forms[0].items() if name != "code_verifier"}
    assert form == {"grant_type": "authorization_code", "code": "the-code", "redirect_uri": PUBLIC_URL + "/callback"}


async def test_a_public_client_sends_its_id_in_the_form() -> None:
    """Rule: without a secret, client_id goes in the form and no Authorization header."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer, client_secret=None))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
    [token_request] = [request for request in issuer.requests if request.url.path == "/token"]
    assert "authorization" not in token_request.headers and issuer.forms[0]["client_id"] == [CLIENT_ID]


async def test_every_request_to_the_op_has_the_timeout() -> None:
    """Rule: discovery, keys and the token request carry the configured timeouts."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer, timeout=httpx.Timeout(4.0, connect=2.0)))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
    expected = {"connect": 2.0, "read": 4.0, "write": 4.0, "pool": 4.0}
    assert [request.extensions["timeout"] for request in issuer.requests] == [expected] * 3


async def test_a_session_ends_at_its_expiry_and_at_sign_out() -> None:
    """Rule: a session is refused once expired, and after /logout even as a copied cookie."""
    issuer, clock = FakeIssuer(), Clock()
    async with client(signin_app(signin_of(issuer, clock=clock, session_seconds=600))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
        copied = browser.cookies["ciba-codec-session"]
        clock.now += 599
        assert (await decode_from_ui(browser)).status_code == 200
        signed_out = await browser.post("/logout", headers={"origin": PUBLIC_URL})
        assert signed_out.status_code == 200 and "Signed out." in signed_out.text
        assert {"max-age=0", "path=/", "httponly", "samesite=lax"} <= {
            part.strip().lower() for part in cookies_set(signed_out)["ciba-codec-session"].split(";")[1:]
        }
        browser.cookies.clear()
        assert refused(await decode_from_ui(browser, cookie=f"ciba-codec-session={copied}"), 401)
        assert "Not signed in" in (await browser.get("/", headers={"cookie": f"ciba-codec-session={copied}"})).text
        # Another session, left to expire.
        browser.cookies.clear()
        assert (await signed_in(browser, issuer)).status_code == 200
        clock.now += 600
        assert refused(await decode_from_ui(browser), 401)
        assert "Not signed in" in (await browser.get("/")).text


async def test_the_session_lasts_the_configured_time() -> None:
    """Rule: the session expires session_seconds after sign-in, not before."""
    issuer, clock = FakeIssuer(), Clock()
    async with client(signin_app(signin_of(issuer, clock=clock, session_seconds=120))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
        clock.now += 119
        assert (await decode_from_ui(browser)).status_code == 200
        clock.now += 1
        assert (await decode_from_ui(browser)).status_code == 401


async def test_a_forged_or_foreign_session_cookie_is_refused() -> None:
    """Rule: a session cookie opens only if sealed by this server's key, as a session, with its fields."""
    issuer = FakeIssuer()
    key = bytes(range(32, 64))
    signin = signin_of(issuer, session_key=key)
    sealer = Sealer(key)
    later = int(time.time()) + 600
    forged = {
        "another key": Sealer().seal("ciba-codec-session", {"sub": "alice", "sid": "s", "exp": later}),
        "a login cookie": sealer.seal("ciba-codec-login", {"sub": "alice", "sid": "s", "exp": later}),
        "no sub": sealer.seal("ciba-codec-session", {"sid": "s", "exp": later}),
        "sub a number": sealer.seal("ciba-codec-session", {"sub": 7, "sid": "s", "exp": later}),
        "no sid": sealer.seal("ciba-codec-session", {"sub": "alice", "exp": later}),
        "exp a string": sealer.seal("ciba-codec-session", {"sub": "alice", "sid": "s", "exp": str(later)}),
        "expired": sealer.seal("ciba-codec-session", {"sub": "alice", "sid": "s", "exp": int(time.time()) - 1}),
    }
    async with client(signin_app(signin)) as browser:
        genuine = sealer.seal("ciba-codec-session", {"sub": "alice", "sid": "s", "exp": later})
        assert (await decode_from_ui(browser, cookie=f"ciba-codec-session={genuine}")).status_code == 200
        for name, value in forged.items():
            response = await decode_from_ui(browser, cookie=f"ciba-codec-session={value}")
            assert refused(response, 401), name


def test_a_sealed_value_opens_only_within_its_limits() -> None:
    """Rule: Sealer.open refuses empty, over 4096 characters, non-ASCII, altered text, and JSON that is no object."""
    sealer = Sealer(bytes(32))
    sealed = sealer.seal("p", {"a": 1})
    assert sealer.open("p", sealed) == {"a": 1}
    assert sealer.open("p", sealed + "=") == {"a": 1}  # padding is optional
    assert sealer.open("p", None) is None and sealer.open("p", "") is None
    assert sealer.open("p", sealed + "é") is None
    assert sealer.open("p", sealed[:-2]) is None and sealer.open("p", "!!!") is None
    assert sealer.open("p", sealer.seal("p", [1, 2])) is None  # type: ignore[arg-type]
    # Compact JSON: 3036 characters of value seal to exactly 4096 characters, the most that opens.
    big = sealer.seal("p", {"a": "x" * 3036})
    assert len(big) == 4096 and sealer.open("p", big) == {"a": "x" * 3036}
    bigger = sealer.seal("p", {"a": "x" * 3037})
    assert len(bigger) > 4096 and sealer.open("p", bigger) is None
    assert '"a"' not in base64.urlsafe_b64decode(sealed + "==").decode("latin-1")


def test_sealed_values_are_unpadded_url_safe_base64_and_all_open() -> None:
    """Rule: a sealed value is URL-safe base64 without padding (a cookie value), whatever its bytes."""
    sealer = Sealer(bytes(32))
    for index in range(600):  # some end in each base64 character: none is stripped but padding
        sealed = sealer.seal("p", {"i": index})
        assert "=" not in sealed and sealer.open("p", sealed) == {"i": index}


def test_spent_values_are_remembered_until_they_expire_and_pruned_at_the_limit() -> None:
    """Rule: a value spent once is refused until its expiry; at the limit, expired entries are dropped."""
    clock = Clock()
    spent = _Spent(clock, limit=2)
    assert spent.add("a", clock.now + 10) and "a" in spent
    assert not spent.add("a", clock.now + 10)
    assert spent.add("b", clock.now + 1) and "c" not in spent
    clock.now += 1
    assert "b" not in spent and spent.add("b", clock.now + 10)  # expired: may be spent again
    assert not spent.add("a", clock.now + 10)  # at the limit, the unexpired ones are kept
    clock.now += 100
    assert spent.add("c", clock.now + 10) and len(spent._until) == 1  # the expired ones were dropped
    # At its expiry exactly a value is spent no more, and at the limit it is dropped.
    spent = _Spent(clock, limit=2)
    assert spent.add("a", clock.now + 5) and spent.add("b", clock.now + 10)
    clock.now += 5
    assert "a" not in spent and spent.add("c", clock.now + 10) and set(spent._until) == {"b", "c"}
    assert spent.add("b", clock.now + 5) is False
    clock.now += 5
    assert spent.add("b", clock.now + 10)
    roomy = _Spent(clock, limit=10)  # no pruning: the expiry alone decides
    assert roomy.add("x", clock.now + 5)
    clock.now += 5
    assert "x" not in roomy and roomy.add("x", clock.now + 5)


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"code": "c", "state": "not-the-state"}, 400),
        ({"code": "c"}, 400),
        ({"state": None}, 400),
        ({"code": "c", "state": None, "error": "access_denied"}, 401),
        ({"code": "c", "state": None, "error": "bad\x01"}, 400),
        ({"code": "", "state": None}, 400),
        ({"code": "é", "state": None}, 400),
        ({"code": "x" * 2049, "state": None}, 400),
    ],
    ids=[
        "wrong state",
        "no state",
        "no code",
        "the OP's error",
        "a control character in error",
        "empty code",
        "non-ASCII code",
        "too long code",
    ],
)
async def test_a_callback_that_breaks_a_rule_opens_no_session(params: dict[str, Any], status: int) -> None:
    """Rule: state must be this browser's (None: the real one), code and error printable ASCII up to 2048."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer))) as browser:
        query = await start_login(browser, issuer)
        sent = {name: query["state"][0] if value is None else value for name, value in params.items()}
        callback = await browser.get("/callback", params=sent)
    assert refused(callback, status) and "ciba-codec-session" not in cookies_set(callback)
    assert callback.headers["cache-control"] == "no-store"
    assert "/token" not in issuer.paths()


async def test_a_code_of_2048_characters_is_accepted() -> None:
    """Rule: the parameter limit is 2048 characters, inclusive."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer))) as browser:
        query = await start_login(browser, issuer)
        callback = await browser.get("/callback", params={"code": "x" * 2048, "state": query["state"][0]})
    assert callback.status_code == 200


async def test_a_callback_is_accepted_once_and_only_within_ten_minutes() -> None:
    """Rule: no callback without this browser's login cookie, after it expired, or a second time."""
    issuer, clock = FakeIssuer(), Clock()
    app = signin_app(signin_of(issuer, clock=clock))
    async with client(app) as browser, client(app) as other:
        query = await start_login(browser, issuer)
        params = {"code": "c", "state": query["state"][0]}
        assert refused(await other.get("/callback", params=params), 400)  # another browser
        login_cookie = browser.cookies["ciba-codec-login"]
        assert (await browser.get("/callback", params=params)).status_code == 200
        replay = await other.get("/callback", params=params, headers={"cookie": f"ciba-codec-login={login_cookie}"})
        assert refused(replay, 400) and "already completed" in replay.json()["error"]
        browser.cookies.clear()
        query = await start_login(browser, issuer)
        clock.now += 599
        late = await browser.get("/callback", params={"code": "c", "state": query["state"][0]})
        assert late.status_code == 200
        query = await start_login(browser, issuer)
        clock.now += 600
        too_late = await browser.get("/callback", params={"code": "c", "state": query["state"][0]})
    assert refused(too_late, 400) and "no sign-in is under way" in too_late.json()["error"]


def _answer(status: int, body: Any) -> Callable[[dict[str, list[str]]], httpx.Response]:
    return lambda form: (
        httpx.Response(status, json=body) if not isinstance(body, bytes) else httpx.Response(status, content=body)
    )


@pytest.mark.parametrize(
    ("answer", "status", "says"),
    [
        (_answer(400, {"error": "invalid_grant"}), 401, "(invalid_grant)"),
        (_answer(400, {"error": "bad\nline"}), 401, "(no error code)"),
        (_answer(400, {"error": "x" * 100}), 401, "(" + "x" * 64 + ")"),
        (_answer(500, b"not json"), 401, "(no error code)"),
        (_answer(200, b"not json"), 401, "(no error code)"),
        (_answer(200, ["a list"]), 401, "(no error code)"),
        (_answer(200, {"access_token": "at"}), 502, "no ID token"),
        (_answer(200, {"id_token": 7}), 502, "no ID token"),
        (_answer(200, {"id_token": "x" * (16 * 1024 + 1)}), 502, "no ID token"),
        (_answer(200, {"id_token": "x" * (16 * 1024)}), 401, "not a valid JWT"),
        (_answer(200, {"id_token": "x", "pad": "y" * (256 * 1024)}), 502, "too large"),
    ],
    ids=[
        "refused",
        "error not printable",
        "long error",
        "500",
        "200 not json",
        "200 a list",
        "no id token",
        "id token a number",
        "id token too long",
        "id token at the limit",
        "too large",
    ],
)
async def test_a_token_response_without_a_good_id_token_opens_no_session(
    answer: Callable[[dict[str, list[str]]], httpx.Response], status: int, says: str
) -> None:
    """Rule: a refused code is 401; an oversized response or no usable ID token is 502.

    The 401 shows the OP's printable error code, 64 characters at most; the response may hold
    256 KiB, its ID token 16 KiB."""
    issuer = FakeIssuer(token_answer=answer)
    async with client(signin_app(signin_of(issuer))) as browser:
        callback = await signed_in(browser, issuer)
    assert refused(callback, status) and says in callback.json()["error"], callback.text
    assert "ciba-codec-session" not in cookies_set(callback)


async def test_a_token_request_that_fails_in_transit_is_a_503() -> None:
    """Rule: the token endpoint unreachable is 503 (try again), no session."""
    issuer = FakeIssuer()

    def down(form: dict[str, list[str]]) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    issuer.token_answer = down
    async with client(signin_app(signin_of(issuer))) as browser:
        callback = await signed_in(browser, issuer)
    assert refused(callback, 503)


async def test_an_id_token_whose_keys_cannot_be_loaded_is_a_503() -> None:
    """Rule: the OP's keys unavailable at the callback is 503."""
    issuer = FakeIssuer(jwks_status=500)
    async with client(signin_app(signin_of(issuer))) as browser:
        callback = await signed_in(browser, issuer)
    assert refused(callback, 503) and "keys could not be loaded" in callback.json()["error"]


async def test_an_id_token_of_a_rotated_in_key_is_accepted_after_one_refetch() -> None:
    """Rule: an ID token whose kid is not among the OP's cached keys refetches them once."""
    issuer = FakeIssuer(key_sets=[[jwk(KEY)], [jwk(KEY), jwk(SECOND_KEY, kid="k2")]])
    issuer.id_token_for = lambda nonce: id_token(nonce, key=SECOND_KEY, kid="k2")
    signin = signin_of(issuer)
    signin._jwks = JwksCache(signin._fetch_jwks, min_refetch_seconds=0.0)
    async with client(signin_app(signin)) as browser:
        callback = await signed_in(browser, issuer)
    assert callback.status_code == 200 and issuer.jwks_fetches == 2


@pytest.mark.parametrize(
    ("kid", "status"), [("k1", 200), (None, 200), ("k9", 401)], ids=["its kid", "no kid", "an unknown kid"]
)
async def test_an_id_token_is_verified_by_the_keys_that_fit_its_kid(kid: str | None, status: int) -> None:
    """Rule: each of the OP's keys for the token's alg and kid is tried until one verifies.

    Keys are fetched once, and once more only when none fits (an unknown kid finds no other key)."""
    issuer = FakeIssuer(key_sets=[[jwk(SECOND_KEY, kid=None), jwk(KEY, kid="k1")]])
    token = id_token if kid == "k1" else lambda nonce: resigned(id_token(nonce), KEY, kid=kid)
    issuer.id_token_for = token
    signin = signin_of(issuer)
    signin._jwks = JwksCache(signin._fetch_jwks, min_refetch_seconds=0.0)
    async with client(signin_app(signin)) as browser:
        callback = await signed_in(browser, issuer)
        assert callback.status_code == status and issuer.jwks_fetches == (1 if status == 200 else 2)
        if status == 200:  # the next sign-in uses the keys already fetched
            browser.cookies.clear()
            assert (await signed_in(browser, issuer)).status_code == 200 and issuer.jwks_fetches == 1


@pytest.mark.parametrize(
    "token",
    [
        lambda nonce: id_token(nonce, alg="PS256"),
        lambda nonce: id_token(nonce, iat="yesterday"),
        lambda nonce: "not-a-jwt",
        lambda nonce: id_token(nonce, azp="another", aud=CLIENT_ID),
        lambda nonce: id_token(7),  # type: ignore[arg-type]
        lambda nonce: id_token(nonce, iat=None),
    ],
    ids=[
        "an algorithm not configured",
        "iat not a number",
        "not a JWT",
        "azp of another client",
        "nonce a number",
        "no iat",
    ],
)
async def test_an_id_token_that_breaks_a_rule_is_a_401(token: Callable[[str], str]) -> None:
    """Rule: the ID token's algorithm as configured, a numeric iat, azp this client, the nonce a string."""
    issuer = FakeIssuer(id_token_for=token)
    async with client(signin_app(signin_of(issuer, algorithms=("RS256",)))) as browser:
        callback = await signed_in(browser, issuer)
    assert refused(callback, 401) and "ciba-codec-session" not in cookies_set(callback)


async def test_an_id_token_within_the_leeway_of_expiry_opens_a_session_and_without_it_does_not() -> None:
    """Rule: the ID token's exp is checked with the configured leeway."""
    token = lambda nonce: id_token(nonce, exp=int(time.time()) - 30)  # noqa: E731
    for leeway, status in ((60, 200), (0, 401)):
        issuer = FakeIssuer(id_token_for=token)
        async with client(signin_app(signin_of(issuer, leeway_seconds=leeway))) as browser:
            assert (await signed_in(browser, issuer)).status_code == status


async def test_a_non_operator_gets_a_403(caplog: pytest.LogCaptureFixture) -> None:
    """Rule: only a listed subject or a holder of the operator claim gets a session."""
    issuer = FakeIssuer(id_token_for=lambda nonce: id_token(nonce, sub="bob"))
    async with client(signin_app(signin_of(issuer))) as browser:
        callback = await signed_in(browser, issuer)
    assert refused(callback, 403) and "bob is not an operator" in callback.json()["error"]
    assert "ciba-codec-session" not in cookies_set(callback)


def test_the_operator_rule() -> None:
    """Rule: a listed sub, or the claim equal to the value or a list holding it."""
    rule = OperatorRule(frozenset({"alice"}), ("groups", "ops"))
    assert rule.admits({"sub": "alice"}) and rule.admits({"sub": "x", "groups": "ops"})
    assert rule.admits({"sub": "x", "groups": ["a", "ops"]})
    assert not rule.admits({"sub": "x", "groups": ["a"]}) and not rule.admits({"sub": "x", "groups": "opsx"})
    assert not rule.admits({"sub": "x"}) and not OperatorRule(frozenset({"alice"})).admits(
        {"sub": "x", "groups": "ops"}
    )


async def test_the_signin_pages_escape_and_forbid_framing() -> None:
    """Rule: the page escapes what it shows, is not cached, and may not be framed or load anything."""
    issuer = FakeIssuer(id_token_for=lambda nonce: id_token(nonce, sub="<b>alice</b>"))
    signin = signin_of(issuer, operators=OperatorRule(frozenset({"<b>alice</b>"})))
    async with client(signin_app(signin)) as browser:
        page = await signed_in(browser, issuer)
        home = await browser.get("/")
    for response in (page, home):
        assert "&lt;b&gt;alice&lt;/b&gt;" in response.text and "<b>alice" not in response.text
        assert response.headers["cache-control"] == "no-store" and response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == (
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        assert 'href="/login"' in response.text and 'action="/logout"' in response.text


async def test_an_overlong_query_string_is_a_414_before_parsing() -> None:
    """Rule: a sign-in route's query over 4096 characters is 414; at 4096 it is parsed."""
    async with client(signin_app(signin_of(FakeIssuer()))) as browser:
        over = await browser.get("/login?x=" + "a" * (MAX_QUERY_CHARS - 1))
        at = await browser.get("/?x=" + "a" * (MAX_QUERY_CHARS - 2))
        callback = await browser.get("/callback?x=" + "a" * MAX_QUERY_CHARS)
    assert refused(over, 414) and refused(callback, 414) and at.status_code == 200
    assert over.json() == {"error": "the query string is longer than 4096 characters"}


async def test_on_https_the_cookies_are_secure_and_prefixed() -> None:
    """Rule: on an https public URL, the session cookie is __Host- and the login cookie __Secure-, both Secure."""
    issuer = FakeIssuer()
    url = "https://codec.example.com"
    app = signin_app(signin_of(issuer, public_url=url + "/"), allowed_hosts=["codec.example.com"])
    async with client(app, base_url=url) as browser:
        login = await browser.get("/login")
        query = issuer.saw_login(login.headers["location"])
        assert query["redirect_uri"] == [url + "/callback"]
        callback = await browser.get("/callback", params={"code": "c", "state": query["state"][0]})
        signed_out = await browser.post("/logout", headers={"origin": url})
    cookies = cookies_set(callback)
    for cookie in (
        cookies_set(login)["__Secure-ciba-codec-login"],
        cookies["__Host-ciba-codec-session"],
        cookies["__Secure-ciba-codec-login"],
        cookies_set(signed_out)["__Host-ciba-codec-session"],
    ):
        assert "Secure" in {part.strip() for part in cookie.split(";")[1:]}, cookie


async def test_the_signin_origin_may_post_logout_but_not_decode() -> None:
    """Rule: the sign-in page's own origin passes the guard (it posts /logout) but is no CORS origin."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
        decode = await browser.post("/decode", content=await encrypted_body(), headers={"origin": PUBLIC_URL})
        logout = await browser.post("/logout", headers={"origin": PUBLIC_URL})
    assert refused(decode, 401) and "access-control-allow-origin" not in decode.headers
    assert logout.status_code == 200


async def test_a_bearer_token_still_works_beside_the_signin() -> None:
    """Rule: with sign-in configured, an Authorization header is checked as a bearer token, not a session."""
    issuer = FakeIssuer()
    app = signin_app(signin_of(issuer), operator_tokens=(OPERATOR_TOKEN,))
    async with client(app) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200
        assert (
            await browser.post("/decode", content=await encrypted_body(), headers=bearer(OPERATOR_TOKEN))
        ).status_code == 200
        wrong = await decode_from_ui(browser, authorization="Bearer wrong-token")
    assert refused(wrong, 401)


def test_repr_names_no_secret() -> None:
    """Rule: BrowserSignIn's repr names the issuer and client, never the secret."""
    assert repr(signin_of(FakeIssuer())) == f"BrowserSignIn(issuer={ISSUER!r}, client_id={CLIENT_ID!r})"


# The app built from settings --------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., CodecServerSettings]]:
    """Loads CodecServerSettings from exactly these CIBA_ variables."""
    for name in list(os.environ):
        if name.startswith("CIBA_"):
            monkeypatch.delenv(name)

    def load(**values: str) -> CodecServerSettings:
        for name, value in {"CIBA_PAYLOAD_KEY": base64.b64encode(PAYLOAD_KEY).decode(), **values}.items():
            monkeypatch.setenv(name, value)
        return CodecServerSettings()  # type: ignore[call-arg]

    yield load


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeIssuer, list[dict[str, Any]]]]:
    """The issuer the app from settings talks to, and the keyword arguments it built its checks with."""
    issuer = FakeIssuer()
    made: list[dict[str, Any]] = []

    def recording(cls: type) -> Callable[..., Any]:
        def make(*args: Any, **options: Any) -> Any:
            made.append({"kind": cls.__name__, "args": args, **options})
            return cls(*args, transport=issuer.transport(), **options)

        return make

    monkeypatch.setattr(codec_server, "OidcAccessTokens", recording(OidcAccessTokens))
    monkeypatch.setattr(codec_server, "BrowserSignIn", recording(BrowserSignIn))
    yield issuer, made


def test_settings_without_a_way_to_authenticate_are_refused(environment: Callable[..., CodecServerSettings]) -> None:
    """Rule: the settings name every way to authenticate when none is set."""
    with pytest.raises(
        ConfigError, match="CIBA_CODEC_OPERATOR_TOKENS, CIBA_CODEC_OIDC_ISSUER or CIBA_CODEC_SIGNIN_CLIENT_ID"
    ):
        environment()
    with pytest.raises((ConfigError, ValueError), match=r"at least 32"):
        environment(CIBA_CODEC_OPERATOR_TOKENS="short")


async def test_the_app_from_operator_settings(environment: Callable[..., CodecServerSettings]) -> None:
    """Rule: the app from operator settings uses each of them.

    The operator tokens, plaintext shown as it is, encoding, hosts, origins, the body limit and the
    read deadline, as configured."""
    settings_ = environment(
        CIBA_CODEC_OPERATOR_TOKENS=f"{OPERATOR_TOKEN},{SECOND_OPERATOR_TOKEN}",
        CIBA_CODEC_ALLOW_ENCODE="true",
        CIBA_CODEC_ALLOWED_HOSTS="codec.example.com",
        CIBA_CODEC_CORS_ORIGINS="https://ui.example.com",
        CIBA_CODEC_MAX_BODY_BYTES="1024",
        CIBA_CODEC_READ_TIMEOUT="0.05",
    )
    app = codec_app_from_settings(settings_)
    plain = json_format.MessageToJson(Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b"7")]))
    async with client(app, "http://codec.example.com") as http:
        decoded = await http.post("/decode", content=plain, headers=bearer(SECOND_OPERATOR_TOKEN))
        encoded = await http.post(
            "/encode", content=plain, headers={"origin": "https://ui.example.com", **bearer(OPERATOR_TOKEN)}
        )
        too_big = await http.post("/decode", content=b" " * 1025, headers=bearer(OPERATOR_TOKEN))
    assert decoded.status_code == 200 and payloads_of(decoded)[0].data == b"7"
    assert encoded.status_code == 200 and payloads_of(encoded)[0].metadata["encoding"] == ENCODING
    assert encoded.headers["access-control-allow-origin"] == "https://ui.example.com"
    assert too_big.status_code == 413
    auth = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    assert (await asgi_call(app, headers=[("host", "localhost"), *auth], chunks=[b"{}"])).status == 421
    late = await asgi_call(
        app, headers=[("host", "codec.example.com"), ("content-length", "9"), *auth], body_arrives=False
    )
    assert late.json() == {"error": "the body did not arrive within 0.05 s"}
    assert (
        await asgi_call(app, headers=[("host", "codec.example.com"), ("origin", UI), *auth], chunks=[b"{}"])
    ).status == 403


async def test_the_app_from_issuer_settings(
    environment: Callable[..., CodecServerSettings], built: tuple[FakeIssuer, list[dict[str, Any]]]
) -> None:
    """Rule: from settings: the issuer, audiences, algorithms, scope, token types, claim, leeway and timeout."""
    _, made = built
    settings_ = environment(
        CIBA_CODEC_OIDC_ISSUER=ISSUER,
        CIBA_CODEC_OIDC_AUDIENCE=f"{AUDIENCE},other",
        CIBA_CODEC_OIDC_ALGS="RS256,ES256",
        CIBA_CODEC_OIDC_REQUIRED_SCOPE="codec:decode",
        CIBA_CODEC_OIDC_TOKEN_TYPES="at+jwt,JWT",
        CIBA_CODEC_OIDC_TOKEN_CLAIM="typ=Bearer",
        CIBA_CODEC_CLOCK_LEEWAY="5",
        CIBA_CODEC_OIDC_HTTP_TIMEOUT="2",
    )
    app = codec_app_from_settings(settings_)
    [oidc] = made
    assert oidc == {
        "kind": "OidcAccessTokens",
        "args": (ISSUER, [AUDIENCE, "other"]),
        "algorithms": ["RS256", "ES256"],
        "required_scope": "codec:decode",
        "token_types": ["at+jwt", "jwt"],
        "required_claim": ("typ", "Bearer"),
        "leeway_seconds": 5,
        "timeout": httpx.Timeout(2.0, connect=2.0),
    }
    good = access_token(typ="JWT", claims={"typ": "Bearer", "scope": "codec:decode"})
    assert (await decode_with(app, good)).status_code == 200
    expired = access_token(typ="JWT", claims={"typ": "Bearer", "scope": "codec:decode"}, exp=int(time.time()) - 30)
    assert refused(await decode_with(app, expired), 401)  # a leeway of 5 s, not the default 60
    assert (await decode_with(app, access_token(typ="JWT", claims={"typ": "Bearer"}))).status_code == 403


def test_the_timeout_from_settings_connects_within_five_seconds(
    environment: Callable[..., CodecServerSettings], built: tuple[FakeIssuer, list[dict[str, Any]]]
) -> None:
    """Rule: the issuer's connect timeout is the HTTP timeout, at most 5 s."""
    _, made = built
    codec_app_from_settings(
        environment(CIBA_CODEC_OIDC_ISSUER=ISSUER, CIBA_CODEC_OIDC_AUDIENCE=AUDIENCE, CIBA_CODEC_OIDC_HTTP_TIMEOUT="20")
    )
    assert made[0]["timeout"] == httpx.Timeout(20.0, connect=5.0)


async def test_the_app_from_signin_settings(
    environment: Callable[..., CodecServerSettings], built: tuple[FakeIssuer, list[dict[str, Any]]]
) -> None:
    """Rule: the app from sign-in settings uses each of them.

    Sign-in at the issuer with the client, secret, public URL, operators and their claim, UI
    origins, scope, session length, key and SameSite, algorithms, leeway, timeout; no bearer access
    tokens without an audience."""
    issuer, made = built
    key = bytes(range(100, 132))
    settings_ = environment(
        CIBA_CODEC_OIDC_ISSUER=ISSUER,
        CIBA_CODEC_SIGNIN_CLIENT_ID=CLIENT_ID,
        CIBA_CODEC_SIGNIN_CLIENT_SECRET=CLIENT_SECRET,
        CIBA_CODEC_PUBLIC_URL="http://localhost:8081",
        CIBA_CODEC_OPERATORS="alice,carol",
        CIBA_CODEC_OPERATOR_CLAIM="groups=ops",
        CIBA_CODEC_CORS_ORIGINS=UI,
        CIBA_CODEC_SIGNIN_SCOPE="openid email",
        CIBA_CODEC_SESSION_SECONDS="300",
        CIBA_CODEC_SESSION_KEY=base64.b64encode(key).decode(),
        CIBA_CODEC_SESSION_SAME_SITE="strict",
        CIBA_CODEC_OIDC_ALGS="RS256",
        CIBA_CODEC_CLOCK_LEEWAY="7",
        CIBA_CODEC_OIDC_HTTP_TIMEOUT="3",
    )
    app = codec_app_from_settings(settings_)
    [signin] = made
    assert signin == {
        "kind": "BrowserSignIn",
        "args": (),
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "public_url": "http://localhost:8081",
        "operators": OperatorRule(frozenset({"alice", "carol"}), ("groups", "ops")),
        "return_origins": [UI],
        "scope": "openid email",
        "session_seconds": 300,
        "session_key": key,
        "same_site": "strict",
        "algorithms": ["RS256"],
        "leeway_seconds": 7,
        "timeout": httpx.Timeout(3.0, connect=3.0),
    }
    async with client(app, "http://localhost:8081") as browser:
        callback = await signed_in(browser, issuer)
        assert callback.status_code == 200
        assert (await decode_from_ui(browser)).status_code == 200
        sealed = browser.cookies["ciba-codec-session"]
        assert Sealer(key).open("ciba-codec-session", sealed) is not None
        # No audience: a bearer access token of the issuer is not accepted.
        assert refused(await decode_with(app, access_token()), 401)


async def test_a_public_signin_client_from_settings_has_no_secret(
    environment: Callable[..., CodecServerSettings], built: tuple[FakeIssuer, list[dict[str, Any]]]
) -> None:
    """Rule: without CIBA_CODEC_SIGNIN_CLIENT_SECRET the sign-in is a public client (PKCE only)."""
    _, made = built
    codec_app_from_settings(
        environment(
            CIBA_CODEC_OIDC_ISSUER=ISSUER,
            CIBA_CODEC_SIGNIN_CLIENT_ID=CLIENT_ID,
            CIBA_CODEC_PUBLIC_URL="http://localhost:8081",
            CIBA_CODEC_OPERATORS="alice",
            CIBA_CODEC_OIDC_HTTP_TIMEOUT="20",
        )
    )
    assert made[0]["client_secret"] is None and made[0]["session_key"] is None
    assert made[0]["timeout"] == httpx.Timeout(20.0, connect=5.0)


async def test_a_return_page_of_2048_characters_on_an_https_ui_is_accepted() -> None:
    """Rule: next may be an https page of the UI, up to 2048 characters."""
    ui = "https://ui.example.com"
    issuer = FakeIssuer()
    next_url = ui + "/" + "a" * (2048 - len(ui) - 1)
    async with client(signin_app(signin_of(issuer, return_origins=[ui]))) as browser:
        query = await start_login(browser, issuer, "?next=" + next_url)
        callback = await browser.get("/callback", params={"code": "c", "state": query["state"][0]})
    assert callback.status_code == 302 and callback.headers["location"] == next_url


async def test_a_callback_at_a_replica_that_never_served_login_completes() -> None:
    """Rule: with one session key, the callback may reach another replica.

    That replica discovers the OP itself; one that cannot reach the OP answers 503."""
    key = bytes(range(32))
    issuer = FakeIssuer()
    first, second = signin_app(signin_of(issuer, session_key=key)), signin_app(signin_of(issuer, session_key=key))
    unreachable = FakeIssuer(down=True)
    third = signin_app(signin_of(unreachable, session_key=key))
    async with client(first) as browser, client(second) as replica, client(third) as down:
        query = await start_login(browser, issuer)
        cookie = {"cookie": f"ciba-codec-login={browser.cookies['ciba-codec-login']}"}
        params = {"code": "c", "state": query["state"][0]}
        failed = await down.get("/callback", params=params, headers=cookie)
        done = await replica.get("/callback", params=params, headers=cookie)
    assert refused(failed, 503) and "could not be reached" in failed.json()["error"]
    assert done.status_code == 200 and "ciba-codec-session" in cookies_set(done)


async def test_the_sign_in_follows_no_redirect_of_the_op() -> None:
    """Rule: a redirect from the OP (here its jwks_uri) is refused: 503, and its target is never fetched."""
    issuer = FakeIssuer(discovery={"jwks_uri": ISSUER + "/moved"})
    async with client(signin_app(signin_of(issuer))) as browser:
        callback = await signed_in(browser, issuer)
    assert refused(callback, 503) and "/jwks" not in issuer.paths() and "/moved" in issuer.paths()


async def test_a_token_response_of_256_kib_exactly_is_read() -> None:
    """Rule: the token response may be MAX_TOKEN_RESPONSE_BYTES long, no more."""
    issuer = FakeIssuer()

    def padded(form: dict[str, list[str]]) -> httpx.Response:
        body = {"id_token": id_token(issuer.nonce), "pad": ""}
        body["pad"] = "y" * (256 * 1024 - len(json.dumps(body, separators=(",", ":"))))
        content = json.dumps(body, separators=(",", ":")).encode()
        assert len(content) == 256 * 1024
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})

    issuer.token_answer = padded
    async with client(signin_app(signin_of(issuer))) as browser:
        assert (await signed_in(browser, issuer)).status_code == 200


async def test_a_public_url_with_a_path_keeps_it_in_the_redirect_uri() -> None:
    """Rule: the redirect URI is the public URL (its trailing slash dropped) and /callback."""
    issuer = FakeIssuer()
    async with client(signin_app(signin_of(issuer, public_url=PUBLIC_URL + "/codecX/"))) as browser:
        query = await start_login(browser, issuer)
    assert query["redirect_uri"] == [PUBLIC_URL + "/codecX/callback"]


async def test_the_session_id_is_random_and_128_bits() -> None:
    """Rule: each session has its own id of 16 random bytes (22 characters), sealed in the cookie."""
    key = bytes(range(32))
    issuer = FakeIssuer()
    ids = []
    async with client(signin_app(signin_of(issuer, session_key=key))) as browser:
        for _ in range(2):
            assert (await signed_in(browser, issuer)).status_code == 200
            session = Sealer(key).open("ciba-codec-session", browser.cookies["ciba-codec-session"])
            assert session is not None and session["sub"] == "alice"
            ids.append(session["sid"])
    assert len(ids[0]) == len(ids[1]) == 22 and ids[0] != ids[1]


def page(message: str) -> str:
    """The sign-in page, as it must be, saying `message`."""
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>temporal-ciba codec server</title>"
        '<link rel="icon" href="data:,"></head><body>'
        f'<p id="status">{message}</p>'
        '<p><a id="signin" href="/login">Sign in</a></p>'
        '<form method="post" action="/logout"><button id="signout" type="submit">Sign out</button></form>'
        "</body></html>"
    )


async def test_the_pages_say_who_is_signed_in_until_when() -> None:
    """Rule: the pages say whether and until when (UTC) the operator is signed in.

    And that they signed out; signing out clears the cookie with the session's own attributes."""
    issuer, clock = FakeIssuer(), Clock()
    clock.now = 1_700_000_000.0  # 22:13:20 UTC
    signin = signin_of(issuer, clock=clock, session_seconds=3600, same_site="strict")
    async with client(signin_app(signin)) as browser:
        before = await browser.get("/")
        callback = await signed_in(browser, issuer)
        home = await browser.get("/")
        signed_out = await browser.post("/logout", headers={"origin": PUBLIC_URL})
    assert before.text == page("Not signed in: the Temporal UI shows payloads encrypted.")
    assert callback.text == page("Signed in as alice until 23:13 UTC. The Temporal UI decodes now.")
    assert home.text == page("Signed in as alice until 23:13 UTC.")
    assert signed_out.text == page("Signed out.")
    cleared = {part.strip() for part in cookies_set(signed_out)["ciba-codec-session"].split(";")[1:]}
    assert {"Max-Age=0", "Path=/", "HttpOnly", "SameSite=strict"} <= cleared
