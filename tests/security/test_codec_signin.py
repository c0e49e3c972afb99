"""The codec server's browser sign-in: only an operator signed in at the OP decodes, from the UI.

Against the session's OP (oidc-provider, its sign-in page picks the account) and the real
`temporal-ciba codec-server` process: the authorization code flow with PKCE, state and nonce;
the session cookie (sealed, HttpOnly, SameSite) and the UI's credentialed CORS calls; a wrong
state, a replayed callback, a subject who is not an operator, a forged or ended session; and
property tests throwing invalid unicode, huge numbers and oversized query strings and bodies at
/login, /callback and /logout.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload, Payloads

from temporal_ciba.crypto._codec import AesGcmCodec
from tests.support.codec_server import start_codec_server, wait_for_port
from tests.support.codec_signin import sign_in
from tests.support.op import TestOP
from tests.support.stack import CODEC_SIGNIN_CLIENT, SECRET
from tests.support.temporal import free_port

UI = "http://localhost:8233"
PAYLOAD_KEY = os.urandom(32)
SECRET_DATA = b'{"binding_message":"Pay EUR 120.00 to IBAN DE02100100109307118603"}'


@dataclass
class SignInCodec:
    url: str
    port: int


@pytest.fixture(scope="module")
def codec(op: TestOP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInCodec]:
    """A codec server whose only way in is the browser sign-in at the session's OP; alice is an operator."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("codec-signin") / "codec-server.log"
    process = start_codec_server(
        log,
        CIBA_PAYLOAD_KEY=base64.b64encode(PAYLOAD_KEY).decode(),
        CIBA_CODEC_PORT=str(port),
        CIBA_CODEC_OIDC_ISSUER=op.issuer,
        CIBA_CODEC_SIGNIN_CLIENT_ID=str(CODEC_SIGNIN_CLIENT["client_id"]),
        CIBA_CODEC_SIGNIN_CLIENT_SECRET=SECRET,
        CIBA_CODEC_PUBLIC_URL=url,
        CIBA_CODEC_OPERATORS="alice",
        CIBA_CODEC_CORS_ORIGINS=UI,
        CIBA_CODEC_MAX_BODY_BYTES=str(64 * 1024),
    )
    wait_for_port(port, process, log)
    yield SignInCodec(url, port)
    process.terminate()
    process.wait(timeout=10)
    assert SECRET not in log.read_text()


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """A browser's cookie jar; redirects followed by sign_in, hop by hop."""
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
        yield http


async def encrypted_body() -> bytes:
    """What the UI posts to /decode: a payload from history, encrypted under the codec's key."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=SECRET_DATA)
    [encrypted] = await AesGcmCodec(PAYLOAD_KEY).encode([plain])
    return json_format.MessageToJson(Payloads(payloads=[encrypted])).encode()


async def decode_from_ui(http: httpx.AsyncClient, codec: SignInCodec, **headers: str) -> httpx.Response:
    return await http.post(
        codec.url + "/decode",
        content=await encrypted_body(),
        headers={"origin": UI, "content-type": "application/json", "x-namespace": "default", **headers},
    )


def set_cookie_headers(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# The flow -------------------------------------------------------------------------------------


async def test_an_operator_signs_in_and_the_ui_decodes_with_the_cookie(
    codec: SignInCodec, browser: httpx.AsyncClient
) -> None:
    login = await browser.get(codec.url + "/login")
    assert login.status_code == 302
    query = parse_qs(urlsplit(login.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0] and query["state"] != query["nonce"]
    assert query["redirect_uri"] == [codec.url + "/callback"] and query["response_type"] == ["code"]
    browser.cookies.clear()

    callback = await sign_in(browser, codec.url, "alice")
    assert callback.status_code == 200, callback.text
    assert "Signed in as alice" in callback.text
    [session_cookie] = [c for c in set_cookie_headers(callback) if c.startswith("ciba-codec-session=")]
    attributes = session_cookie.lower()
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # http on loopback; https gets Secure and the __Host- prefix
    value = session_cookie.split(";")[0].split("=", 1)[1]
    # Sealed: neither the subject nor anything token-like reads out of it.
    assert "alice" not in value and "alice" not in base64.urlsafe_b64decode(value + "==").decode("latin-1")

    decoded = await decode_from_ui(browser, codec)
    assert decoded.status_code == 200, decoded.text
    assert json_format.ParseDict(decoded.json(), Payloads()).payloads[0].data == SECRET_DATA
    assert decoded.headers["access-control-allow-origin"] == UI
    assert decoded.headers["access-control-allow-credentials"] == "true"


async def test_the_uis_credentialed_preflight_names_its_origin_exactly(codec: SignInCodec) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        preflight = await http.options(
            codec.url + "/decode",
            headers={
                "origin": UI,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-namespace",
            },
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == UI  # never * with credentials
    assert preflight.headers["access-control-allow-credentials"] == "true"


async def test_a_session_decodes_only_for_the_uis_origin(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    """A cookie goes with every request the browser makes to the codec server, whoever's page made it."""
    assert (await sign_in(browser, codec.url, "alice")).status_code == 200
    without_origin = await browser.post(codec.url + "/decode", content=await encrypted_body())
    assert without_origin.status_code == 401 and b"DE02" not in without_origin.content
    other_site = await decode_from_ui(browser, codec, origin="https://evil.example")
    assert other_site.status_code == 403 and b"DE02" not in other_site.content


async def test_no_session_no_plaintext(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    response = await decode_from_ui(browser, codec)
    assert response.status_code == 401 and b"DE02" not in response.content
    assert response.headers["access-control-allow-origin"] == UI  # the UI can read why


async def test_a_subject_who_is_not_an_operator_gets_no_session(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    callback = await sign_in(browser, codec.url, "bob")
    assert callback.status_code == 403 and "bob is not an operator" in callback.json()["error"]
    assert not any(c.startswith("ciba-codec-session=") for c in set_cookie_headers(callback))
    assert (await decode_from_ui(browser, codec)).status_code == 401


async def test_a_forged_session_cookie_is_refused(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    assert (await sign_in(browser, codec.url, "alice")).status_code == 200
    genuine = browser.cookies["ciba-codec-session"]
    raw = bytearray(base64.urlsafe_b64decode(genuine + "=" * (-len(genuine) % 4)))
    raw[-1] ^= 1
    browser.cookies.clear()
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for value in (forged, genuine[:-4], "e30", "alice"):
        response = await decode_from_ui(browser, codec, cookie=f"ciba-codec-session={value}")
        assert response.status_code == 401, value


async def test_a_wrong_state_is_refused(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    login = await browser.get(codec.url + "/login")
    assert login.status_code == 302
    response = await browser.get(codec.url + "/callback", params={"code": "x" * 43, "state": "not-the-state"})
    assert response.status_code == 400 and "state" in response.json()["error"]
    assert not any(c.startswith("ciba-codec-session=") for c in set_cookie_headers(response))


async def test_a_callback_without_the_login_cookie_is_refused(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    """Another browser's callback URL (a login CSRF, or a code that leaked) opens no session here."""
    async with httpx.AsyncClient(timeout=30) as victim:
        login = await browser.get(codec.url + "/login")
        state = parse_qs(urlsplit(login.headers["location"]).query)["state"][0]
        response = await victim.get(codec.url + "/callback", params={"code": "x" * 43, "state": state})
    assert response.status_code == 400 and "no sign-in is under way" in response.json()["error"]


async def test_a_replayed_callback_is_refused(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    """The same code and state again, with the login cookie the browser sent: refused before the OP is asked."""
    callback = await sign_in(browser, codec.url, "alice")
    assert callback.status_code == 200
    cleared = [c for c in set_cookie_headers(callback) if c.startswith("ciba-codec-login=")]
    assert cleared and "max-age=0" in cleared[0].lower()  # the browser forgets the login cookie
    login_cookie = _login_cookie_of(callback)
    browser.cookies.clear()
    replayed = await browser.get(str(callback.url), headers={"cookie": f"ciba-codec-login={login_cookie}"})
    assert replayed.status_code == 400 and "already completed" in replayed.json()["error"]
    assert not any(c.startswith("ciba-codec-session=") for c in set_cookie_headers(replayed))


def _login_cookie_of(callback: httpx.Response) -> str:
    """The login cookie the browser held when it reached the callback."""
    sent = callback.request.headers.get("cookie", "")
    found = re.search(r"ciba-codec-login=([^;]+)", sent)
    assert found is not None, sent
    return found.group(1)


async def test_sign_out_ends_the_session_even_for_a_copied_cookie(
    codec: SignInCodec, browser: httpx.AsyncClient
) -> None:
    assert (await sign_in(browser, codec.url, "alice")).status_code == 200
    copied = browser.cookies["ciba-codec-session"]
    assert (await decode_from_ui(browser, codec)).status_code == 200
    signed_out = await browser.post(codec.url + "/logout", headers={"origin": codec.url})
    assert signed_out.status_code == 200 and "Signed out" in signed_out.text
    assert (await decode_from_ui(browser, codec)).status_code == 401
    again = await decode_from_ui(browser, codec, cookie=f"ciba-codec-session={copied}")
    assert again.status_code == 401


async def test_login_returns_only_to_the_ui(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    back = f"{UI}/namespaces/default/workflows"
    assert (await browser.get(codec.url + "/login", params={"next": back})).status_code == 302
    for elsewhere in ("https://evil.example/", "//evil.example", "javascript:alert(1)", f"{UI}@evil.example"):
        response = await browser.get(codec.url + "/login", params={"next": elsewhere})
        assert response.status_code == 400, elsewhere


async def test_encoding_nothing_succeeds_with_encoding_off(codec: SignInCodec, browser: httpx.AsyncClient) -> None:
    """`temporal workflow metadata` and `query` encode their empty input through the codec server."""
    assert (await sign_in(browser, codec.url, "alice")).status_code == 200
    response = await browser.post(codec.url + "/encode", content=b'{"payloads": []}', headers={"origin": UI})
    assert response.status_code == 200 and response.json() == {"payloads": []}
    one = json_format.MessageToJson(Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b"1")]))
    refused = await browser.post(codec.url + "/encode", content=one, headers={"origin": UI})
    assert refused.status_code == 403


# Property tests -------------------------------------------------------------------------------

# Query values: any unicode (lone surrogates are sent as their UTF-8-ish bytes, i.e. invalid
# UTF-8), huge numbers, and strings past the server's 4,096-character limit.
texts = st.one_of(
    st.text(max_size=80),
    st.integers(min_value=-(10**60), max_value=10**60).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=2000, max_value=20_000).map(lambda n: "x" * n),
)


def _encoded(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


raw_query_values = st.one_of(
    texts.map(_encoded),
    st.binary(max_size=60).map(lambda raw: "".join(f"%{b:02x}" for b in raw)),  # invalid UTF-8
)
cookie_values = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=';,\\"'), max_size=300),
    st.binary(max_size=200).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")),
)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def _answered(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert list(response.json()) == ["error"]
    assert b"DE02" not in response.content and SECRET.encode() not in response.content


@PROPERTY_SETTINGS
@given(next_value=raw_query_values, extra=raw_query_values)
def test_login_answers_any_query_without_a_5xx(codec: SignInCodec, next_value: str, extra: str) -> None:
    with httpx.Client(timeout=30) as http:
        response = http.get(f"{codec.url}/login?next={next_value}&{extra}={extra}")
        home = http.get(f"{codec.url}/?{extra}={next_value}", headers={"cookie": f"ciba-codec-session={extra}"})
    _answered(home)
    assert home.status_code in (200, 414) and "Signed in" not in home.text
    _answered(response)
    if response.status_code == 302:
        assert response.headers["location"].startswith("http://127.0.0.1:")


@PROPERTY_SETTINGS
@given(
    code=raw_query_values,
    state=raw_query_values,
    error=st.one_of(st.none(), raw_query_values),
    login_cookie=cookie_values,
    session_cookie=cookie_values,
)
def test_callback_answers_anything_without_a_5xx_or_a_session(
    codec: SignInCodec,
    code: str,
    state: str,
    error: str | None,
    login_cookie: str | None,
    session_cookie: str | None,
) -> None:
    cookies = {"ciba-codec-login": login_cookie, "ciba-codec-session": session_cookie}
    header = "; ".join(f"{name}={value}" for name, value in cookies.items() if value is not None)
    query = f"code={code}&state={state}" + (f"&error={error}" if error is not None else "")
    with httpx.Client(timeout=30) as http:
        response = http.get(f"{codec.url}/callback?{query}", headers={"cookie": header} if header else {})
    _answered(response)
    assert response.status_code >= 400
    assert not any(c.startswith("ciba-codec-session=") for c in response.headers.get_list("set-cookie"))


@PROPERTY_SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.integers(min_value=70 * 1024, max_value=200 * 1024).map(lambda n: b"x" * n),
        st.integers(min_value=-(10**60), max_value=10**60).map(lambda n: str(n).encode()),
    ),
    session_cookie=cookie_values,
    query=raw_query_values,
)
def test_logout_answers_anything_without_a_5xx(
    codec: SignInCodec, body: bytes, session_cookie: str | None, query: str
) -> None:
    headers = {"origin": codec.url}
    if session_cookie is not None:
        headers["cookie"] = f"ciba-codec-session={session_cookie}"
    with httpx.Client(timeout=30) as http:
        try:
            response = http.post(f"{codec.url}/logout?{query}", content=body, headers=headers)
        except httpx.TransportError:
            return  # the server answered and closed before a large body went out: no 5xx either
    _answered(response)


def test_an_overlong_query_string_is_refused_before_parsing(codec: SignInCodec) -> None:
    with httpx.Client(timeout=30) as http:
        for path in ("/login", "/callback"):
            response = http.get(f"{codec.url}{path}?next={'%ff' * 3000}")
            assert response.status_code == 414 and list(response.json()) == ["error"]
