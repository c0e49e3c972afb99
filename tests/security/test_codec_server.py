"""The codec server is no oracle, and bad input never gets a 5xx.

Every attack goes through the real `temporal-ciba codec-server` process over HTTP: without a
token, with a wrong or forged one, from another site's page, through a DNS-rebound host name,
asking to encode, with a 300 MB body, with malformed payloads; and a property test throws
surrogates, invalid UTF-8, huge numbers, NaN, deep nesting and oversized bodies at it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload, Payloads

from temporal_ciba.crypto._codec import ENCODING, KEY_ID_METADATA, AesGcmCodec
from tests.support.codec_server import codec_env, start_codec_server, wait_for_port
from tests.support.temporal import free_port

UI = "http://localhost:8233"
AUDIENCE = "temporal-codec"
MAX_BODY = 64 * 1024  # small, so the property test's oversized bodies are cheap
PAYLOAD_KEY = os.urandom(32)  # the codec server's, known to the strategies below


def _random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


# A local OIDC issuer: a discovery document and a JWKS, served over loopback http --------------


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey
    jwks_fetches: list[float]

    def token(
        self,
        *,
        key: Any = None,
        alg: str = "RS256",
        kid: str | None = "k1",
        typ: str | None = "at+jwt",
        claims: dict[str, Any] | None = None,
        **more_claims: Any,
    ) -> str:
        """A JWT of this issuer for AUDIENCE: an RFC 9068 access token unless `typ` (its header) says otherwise."""
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "operator-1",
            "iat": now,
            "exp": now + 300,
            **(claims or {}),
            **more_claims,
        }
        body = {name: value for name, value in body.items() if value is not None}
        headers = {"kid": kid} if kid is not None else {}
        # PyJWT writes typ "JWT" unless told; None leaves the header without one.
        headers["typ"] = typ  # type: ignore[assignment]
        return jwt.encode(body, key if key is not None else self.key, algorithm=alg, headers=headers)

    def id_token(self, **claims: Any) -> str:
        """What the OP issues a CIBA client whose id is AUDIENCE: an ID token (typ JWT), aud the client."""
        now = int(time.time())
        return self.token(
            typ="JWT",
            auth_time=now - 5,
            acr="urn:example:acr:mfa",
            at_hash="x" * 22,
            claims={"urn:openid:params:jwt:claim:auth_req_id": "req-1", **claims},
        )


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    key = rsa.generate_private_key(65537, 2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fetches: list[float] = []
    documents = {
        "/.well-known/openid-configuration": {
            "issuer": url,
            "token_endpoint": url + "/token",
            "jwks_uri": url + "/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
        },
        "/jwks": {"keys": [jwk]},
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = documents.get(self.path)
            if self.path == "/jwks":
                fetches.append(time.monotonic())
            body = json.dumps(document).encode()
            self.send_response(200 if document else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Issuer(url, key, fetches)
    server.shutdown()
    server.server_close()


# The real codec server process ---------------------------------------------------------------


@dataclass
class CodecProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    payload_key: bytes
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def codec(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodecProcess]:
    """`temporal-ciba codec-server` with an operator token and the local OIDC issuer; the rest default."""
    port = free_port()
    token = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    log = tmp_path_factory.mktemp("codec-server") / "codec-server.log"
    process = start_codec_server(
        log,
        CIBA_PAYLOAD_KEY=base64.b64encode(PAYLOAD_KEY).decode(),
        CIBA_CODEC_PORT=str(port),
        CIBA_CODEC_OPERATOR_TOKENS=f"{'another-operator-token-' * 2},{token}",
        CIBA_CODEC_OIDC_ISSUER=issuer.url,
        CIBA_CODEC_OIDC_AUDIENCE=AUDIENCE,
        CIBA_CODEC_CORS_ORIGINS=UI,
        CIBA_CODEC_MAX_BODY_BYTES=str(MAX_BODY),
    )
    wait_for_port(port, process, log)
    yield CodecProcess(f"http://127.0.0.1:{port}", port, process, PAYLOAD_KEY, token)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def http(codec: CodecProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=codec.url, timeout=30) as client:
        yield client


def sealed_body(key: bytes, secret: bytes) -> bytes:
    """What the UI posts to /decode: a payload from history, encrypted under `key`."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=secret)
    [encrypted] = asyncio.run(AesGcmCodec(key).encode([plain]))
    return json_format.MessageToJson(Payloads(payloads=[encrypted])).encode()


SECRET = b'{"amount":"1250.00","iban":"DE89370400440532013000"}'


# Configuration --------------------------------------------------------------------------------


def test_refuses_to_start_without_an_authentication_method(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "temporal_ciba", "codec-server"],
        env=codec_env(CIBA_PAYLOAD_KEY=_random_key(), CIBA_CODEC_PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "CIBA_CODEC_OPERATOR_TOKENS" in line and "CIBA_CODEC_OIDC_ISSUER" in line


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"CIBA_CODEC_OPERATOR_TOKENS": "short"}, "CIBA_CODEC_OPERATOR_TOKENS"),
        ({"CIBA_CODEC_OIDC_ISSUER": "http://127.0.0.1:1"}, "CIBA_CODEC_OIDC_AUDIENCE"),
        ({"CIBA_CODEC_OIDC_ISSUER": "http://idp.example", "CIBA_CODEC_OIDC_AUDIENCE": "x"}, "CIBA_CODEC_OIDC_ISSUER"),
        (
            {
                "CIBA_CODEC_OIDC_ISSUER": "http://127.0.0.1:1",
                "CIBA_CODEC_OIDC_AUDIENCE": "x",
                "CIBA_CODEC_OIDC_ALGS": "HS256",
            },
            "CIBA_CODEC_OIDC_ALGS",
        ),
    ],
    ids=["short token", "issuer without audience", "plain-http issuer", "symmetric algorithm"],
)
def test_refuses_weak_authentication_settings(settings: dict[str, str], named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "temporal_ciba", "codec-server"],
        env=codec_env(CIBA_PAYLOAD_KEY=_random_key(), CIBA_CODEC_PORT=str(free_port()), **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert named in line


def test_listens_on_loopback_only(codec: CodecProcess) -> None:
    listening = [c for c in psutil.Process(codec.process.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}


# Authentication -------------------------------------------------------------------------------


def test_decodes_for_an_operator_token(codec: CodecProcess, http: httpx.Client) -> None:
    response = http.post("/decode", content=sealed_body(codec.payload_key, SECRET), headers=codec.auth)
    assert response.status_code == 200
    assert json_format.ParseDict(response.json(), Payloads()).payloads[0].data == SECRET


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token-of-a-plausible-length-0123456789",
        "Basic b3BlcmF0b3I6cGFzc3dvcmQ=",
        "Bearer another-operator-token-",  # a prefix of a configured token
        "Bearer " + "x" * 20_000,
    ],
    ids=["none", "empty", "no token", "wrong token", "basic", "prefix", "huge"],
)
def test_no_plaintext_without_a_valid_token(codec: CodecProcess, http: httpx.Client, authorization: str | None) -> None:
    """The issue's attack: POST /decode with no or any token returned the agent's input."""
    headers = {} if authorization is None else {"authorization": authorization}
    response = http.post("/decode", content=sealed_body(codec.payload_key, SECRET), headers=headers)
    assert response.status_code == 401, response.text
    assert b"DE89" not in response.content and response.headers["www-authenticate"].startswith("Bearer")
    assert list(response.json()) == ["error"]


def test_decodes_for_an_access_token_of_the_issuer(codec: CodecProcess, http: httpx.Client, issuer: Issuer) -> None:
    response = http.post(
        "/decode",
        content=sealed_body(codec.payload_key, SECRET),
        headers={"authorization": f"Bearer {issuer.token()}"},
    )
    assert response.status_code == 200, response.text
    assert json_format.ParseDict(response.json(), Payloads()).payloads[0].data == SECRET


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_decodes_for_an_rfc_9068_access_token(
    codec: CodecProcess, http: httpx.Client, issuer: Issuer, typ: str
) -> None:
    response = http.post(
        "/decode",
        content=sealed_body(codec.payload_key, SECRET),
        headers={"authorization": f"Bearer {issuer.token(typ=typ)}"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "token",
    [
        lambda issuer: issuer.id_token(),
        lambda issuer: issuer.token(typ="JWT"),
        lambda issuer: issuer.token(typ=None),
        lambda issuer: issuer.token(typ="id_token+jwt"),
        lambda issuer: issuer.token(typ="at+jwt\n"),
        lambda issuer: issuer.token(typ="dpop+jwt"),
    ],
    ids=[
        "CIBA ID token for the audience",
        "typ JWT",
        "no typ",
        "another typ",
        "typ with a newline",
        "a DPoP proof's typ",
    ],
)
def test_an_id_token_for_the_audience_is_no_access_token(
    codec: CodecProcess, http: httpx.Client, issuer: Issuer, token: Any
) -> None:
    """An ID token signed by the issuer, for a client whose id is the configured audience: 401."""
    response = http.post(
        "/decode",
        content=sealed_body(codec.payload_key, SECRET),
        headers={"authorization": f"Bearer {token(issuer)}"},
    )
    assert response.status_code == 401, response.text
    assert b"DE89" not in response.content and "not an access token" in response.json()["error"]


@pytest.fixture(scope="module")
def keycloak_style_codec(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A codec server for an OP whose access tokens say typ JWT, told them apart by a claim (typ=Bearer)."""
    port = free_port()
    log = tmp_path_factory.mktemp("codec-server-typ") / "codec-server.log"
    process = start_codec_server(
        log,
        CIBA_PAYLOAD_KEY=base64.b64encode(PAYLOAD_KEY).decode(),
        CIBA_CODEC_PORT=str(port),
        CIBA_CODEC_OIDC_ISSUER=issuer.url,
        CIBA_CODEC_OIDC_AUDIENCE=AUDIENCE,
        CIBA_CODEC_OIDC_TOKEN_TYPES="JWT",
        CIBA_CODEC_OIDC_TOKEN_CLAIM="typ=Bearer",
    )
    wait_for_port(port, process, log)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_a_configured_rule_admits_another_typ_but_still_no_id_token(keycloak_style_codec: str, issuer: Issuer) -> None:
    body = sealed_body(PAYLOAD_KEY, SECRET)
    answers = {
        name: httpx.post(
            keycloak_style_codec + "/decode", content=body, headers={"authorization": f"Bearer {token}"}, timeout=30
        ).status_code
        for name, token in {
            "access token": issuer.token(typ="JWT", claims={"typ": "Bearer"}),
            "ID token": issuer.token(typ="JWT", claims={"typ": "ID"}),
            "no typ claim": issuer.token(typ="JWT"),
            "at+jwt without the claim": issuer.token(typ="at+jwt"),
        }.items()
    }
    assert answers == {"access token": 200, "ID token": 401, "no typ claim": 401, "at+jwt without the claim": 401}


def test_another_typ_without_a_rule_that_id_tokens_fail_is_refused_at_start(issuer: Issuer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "temporal_ciba", "codec-server"],
        env=codec_env(
            CIBA_PAYLOAD_KEY=_random_key(),
            CIBA_CODEC_PORT=str(free_port()),
            CIBA_CODEC_OIDC_ISSUER=issuer.url,
            CIBA_CODEC_OIDC_AUDIENCE=AUDIENCE,
            CIBA_CODEC_OIDC_TOKEN_TYPES="at+jwt,JWT",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "CIBA_CODEC_OIDC_TOKEN_TYPES accepts jwt" in line and "CIBA_CODEC_OIDC_TOKEN_CLAIM" in line


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    signing_input = _b64url(b'{"alg":"HS256","kid":"k1","typ":"at+jwt"}') + "." + _b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _forged_tokens(issuer: Issuer) -> dict[str, str]:
    other_key = rsa.generate_private_key(65537, 2048)
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    header = _b64url(b'{"alg":"none","kid":"k1","typ":"at+jwt"}')
    claims = {"iss": issuer.url, "aud": AUDIENCE, "exp": now + 300}
    unsigned = _b64url(json.dumps(claims).encode())
    return {
        "expired": issuer.token(iat=now - 3600, exp=now - 600),
        "other audience": issuer.token(aud="another-api"),
        "other issuer": issuer.token(iss="http://127.0.0.1:1"),
        "no exp": issuer.token(exp=None),
        "no aud": issuer.token(aud=None),
        "another key, same kid": issuer.token(key=other_key),
        "another key, unknown kid": issuer.token(key=other_key, kid="attacker"),
        # The classic confusion: the issuer's public key used as an HMAC secret.
        "HS256 with the public key": _hs256(claims, public_pem),
        "alg none": f"{header}.{unsigned}.",
        "not before in the future": issuer.token(nbf=now + 3600),
        "signature stripped": issuer.token().rpartition(".")[0] + ".",
    }


def test_refuses_forged_and_misdirected_access_tokens(codec: CodecProcess, http: httpx.Client, issuer: Issuer) -> None:
    body = sealed_body(codec.payload_key, SECRET)
    answers = {
        name: http.post("/decode", content=body, headers={"authorization": f"Bearer {token}"}).status_code
        for name, token in _forged_tokens(issuer).items()
    }
    assert answers == {name: 401 for name in answers}


def test_unknown_key_ids_do_not_make_it_hammer_the_issuer(
    codec: CodecProcess, http: httpx.Client, issuer: Issuer
) -> None:
    http.post("/decode", content=b"{}", headers={"authorization": f"Bearer {issuer.token()}"})  # keys cached
    before = len(issuer.jwks_fetches)
    other_key = rsa.generate_private_key(65537, 2048)
    for i in range(30):
        token = issuer.token(key=other_key, kid=f"unknown-{i}")
        assert http.post("/decode", content=b"{}", headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert len(issuer.jwks_fetches) - before <= 1


# Host, Origin, CORS ---------------------------------------------------------------------------


def test_refuses_another_sites_origin_even_with_a_token(codec: CodecProcess, http: httpx.Client) -> None:
    for origin in ("https://evil.example", "null", UI + ".evil.example", UI.replace("http:", "https:")):
        response = http.post(
            "/decode", content=sealed_body(codec.payload_key, SECRET), headers={**codec.auth, "origin": origin}
        )
        assert response.status_code == 403, origin
        assert b"DE89" not in response.content and "access-control-allow-origin" not in response.headers


def test_refuses_a_dns_rebound_host_even_with_a_token(codec: CodecProcess, http: httpx.Client) -> None:
    """A page at attacker.example whose name now resolves to 127.0.0.1 is same-origin to itself.

    No CORS, no Origin check helps; its requests still say Host: attacker.example."""
    for host in (f"attacker.example:{codec.port}", "attacker.example", f"127.0.0.1.attacker.example:{codec.port}"):
        response = http.post(
            "/decode", content=sealed_body(codec.payload_key, SECRET), headers={**codec.auth, "host": host}
        )
        assert response.status_code == 421, host
        assert b"DE89" not in response.content
    for host in (f"localhost:{codec.port}", f"127.0.0.1:{codec.port}"):
        allowed = http.post("/decode", content=b"{}", headers={**codec.auth, "host": host})
        assert allowed.status_code == 200, host


def test_the_uis_preflight_needs_no_token_and_allows_authorization(http: httpx.Client) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    allowed = http.options("/decode", headers={"origin": UI, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == UI
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = http.options("/decode", headers={"origin": "https://evil.example", **preflight})
    assert refused.status_code >= 400 and "access-control-allow-origin" not in refused.headers


def test_the_ui_can_read_its_answers(codec: CodecProcess, http: httpx.Client) -> None:
    response = http.post(
        "/decode", content=sealed_body(codec.payload_key, SECRET), headers={**codec.auth, "origin": UI}
    )
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == UI
    unauthenticated = http.post("/decode", content=b"{}", headers={"origin": UI})
    assert unauthenticated.status_code == 401 and unauthenticated.headers["access-control-allow-origin"] == UI


# Encode ---------------------------------------------------------------------------------------


def test_encode_is_off_by_default(codec: CodecProcess, http: httpx.Client) -> None:
    """/encode would make ciphertext the worker accepts as its own (and so forge history)."""
    plain = json_format.MessageToJson(Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b"1")]))
    response = http.post("/encode", content=plain, headers=codec.auth)
    assert response.status_code == 403 and "CIBA_CODEC_ALLOW_ENCODE" in response.json()["error"]
    assert "binary/encrypted" not in response.text


def test_encoding_nothing_is_answered_with_encode_off(codec: CodecProcess, http: httpx.Client) -> None:
    """An empty list makes no ciphertext; `temporal workflow query` and `metadata` encode their empty input first."""
    response = http.post("/encode", content=b'{"payloads": []}', headers=codec.auth)
    assert response.status_code == 200 and response.json() == {"payloads": []}
    assert http.post("/encode", content=b'{"payloads": []}').status_code == 401  # still authenticated


# Bodies ---------------------------------------------------------------------------------------


def _stream_body(port: int, headers: dict[str, str], total: int, *, chunked: bool) -> tuple[int, int]:
    """Send `total` bytes (or until the server answers) on a raw socket; the status and bytes sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = "transfer-encoding: chunked" if chunked else f"content-length: {total}"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"POST /decode HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{head}{framing}\r\n\r\n".encode())
    answer = bytearray()

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                answer.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    block = b"[" * (1024 * 1024)
    sent = 0
    try:
        while sent < total and not answer:
            data = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
            sock.sendall(data)
            sent += len(block)
    except OSError:
        pass  # the server answered and closed while we were still sending
    deadline = time.monotonic() + 30
    while b"\r\n\r\n" not in answer and reader.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    sock.close()
    status_line = bytes(answer).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), bytes(answer[:200])
    return int(status_line.split()[1]), sent


def _peak_rss_while(pid: int, action: Any) -> tuple[Any, int, int]:
    process = psutil.Process(pid)
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return result, before, peak[0]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_300_mb_body_is_cut_off_while_streaming(codec: CodecProcess, chunked: bool) -> None:
    total = 300 * 1024 * 1024
    (status, sent), before, peak = _peak_rss_while(
        codec.process.pid, lambda: _stream_body(codec.port, codec.auth, total, chunked=chunked)
    )
    assert status == 413
    assert sent < total  # refused long before the end
    print(f"status {status}, sent {sent >> 20} MB of {total >> 20} MB, RSS {before >> 20} -> {peak >> 20} MB")
    assert peak - before < 50 * 1024 * 1024, f"RSS grew by {(peak - before) >> 20} MB"


def test_a_body_declared_too_large_is_refused_before_it_is_sent(codec: CodecProcess) -> None:
    with socket.create_connection(("127.0.0.1", codec.port), timeout=10) as sock:
        head = f"POST /decode HTTP/1.1\r\nhost: 127.0.0.1:{codec.port}\r\nauthorization: Bearer {codec.token}\r\n"
        sock.sendall(f"{head}content-length: {300 * 1024 * 1024}\r\n\r\n".encode())
        answer = sock.recv(4096)  # no body byte sent: the answer comes from the declared length alone
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]


def test_a_300_mb_body_without_a_token_is_refused_unread(codec: CodecProcess) -> None:
    total = 300 * 1024 * 1024
    (status, sent), before, peak = _peak_rss_while(
        codec.process.pid, lambda: _stream_body(codec.port, {}, total, chunked=True)
    )
    assert status == 401 and sent < total
    assert peak - before < 50 * 1024 * 1024


def _payloads_body(*payloads: dict[str, Any]) -> bytes:
    return json.dumps({"payloads": list(payloads)}).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MALFORMED = {
    "non-UTF-8 key id": _payloads_body(
        {"metadata": {"encoding": _b64(ENCODING), KEY_ID_METADATA: _b64(b"\xff\xfe\x80")}, "data": _b64(b"x" * 40)}
    ),
    "data shorter than a nonce": None,  # filled in with the server's key id below
    "data shorter than nonce and tag": None,
    "altered ciphertext": None,
    "invalid UTF-8 body": b'{"payloads": [{"data": "\xff\xfe"}]}',
    "lone surrogate, escaped": b'{"payloads": [{"metadata": {"\\ud800": "AA=="}}]}',
    "lone surrogate, raw": '{"payloads": [{"metadata": {"\ud800": "AA=="}}]}'.encode("utf-8", "surrogatepass"),
    "NaN": b'{"payloads": NaN}',
    "huge number": b'{"payloads": [{"data": 1e999999}]}',
    "huge integer": b'{"payloads": [{"data": ' + b"9" * 5000 + b"}]}",
    "deep nesting": b'{"payloads": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    "not JSON": b"\x00\x01\x02",
    "empty": b"",
}


def test_malformed_payloads_get_a_4xx(codec: CodecProcess, http: httpx.Client) -> None:
    key_id = AesGcmCodec(codec.payload_key).key_id.encode()
    sealed = json.loads(sealed_body(codec.payload_key, SECRET))["payloads"][0]
    altered = base64.b64decode(sealed["data"])
    altered = altered[:-1] + bytes([altered[-1] ^ 1])
    cases = dict(MALFORMED)
    for name, data in (
        ("data shorter than a nonce", b"\x00" * 5),
        ("data shorter than nonce and tag", b"\x00" * 20),
        ("altered ciphertext", altered),
    ):
        metadata = {"encoding": _b64(ENCODING), KEY_ID_METADATA: _b64(key_id)}
        cases[name] = _payloads_body({"metadata": metadata, "data": _b64(data)})
    answers = {}
    for name, body in cases.items():
        assert body is not None
        response = http.post("/decode", content=body, headers=codec.auth)
        answers[name] = response.status_code
        assert len(response.content.splitlines()) == 1 and "error" in response.json(), name
    assert answers == {name: 400 for name in answers}
    assert codec.process.poll() is None
    # The codec itself names what is wrong (it used to crash on these: 500).
    for name, expected in (
        ("non-UTF-8 key id", "encrypted with key"),
        ("data shorter than a nonce", "too short"),
        ("data shorter than nonce and tag", "too short"),
        ("altered ciphertext", "failed authentication"),
    ):
        body = cases[name]
        assert body is not None
        assert expected in http.post("/decode", content=body, headers=codec.auth).json()["error"], name


# Property: no input gets a 5xx ----------------------------------------------------------------

surrogates = st.characters(categories=["Cs"])
any_text = st.text(st.one_of(st.characters(), surrogates), max_size=40)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        any_text,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=20,
)


def _dump(value: Any) -> bytes:
    """JSON as an attacker writes it: NaN allowed, surrogates raw (invalid UTF-8)."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _dump_escaped(value: Any) -> bytes:
    """The same with surrogates escaped (valid UTF-8 JSON naming an unpaired surrogate)."""
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def payload_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Payloads as history holds them, or nearly.

    Encrypted ones under this server's key id or another (any bytes), with data of any length; and
    anything else in their fields."""
    if draw(st.booleans()):
        key_id = draw(st.one_of(st.just(AesGcmCodec(PAYLOAD_KEY).key_id.encode()), st.binary(max_size=20)))
        metadata: dict[str, Any] = {"encoding": _b64(ENCODING), KEY_ID_METADATA: _b64(key_id)}
        return {"metadata": metadata, "data": _b64(draw(st.binary(max_size=60)))}
    keys = st.one_of(st.just("encoding"), st.just(KEY_ID_METADATA), any_text)
    values = st.one_of(st.just(_b64(ENCODING)), st.binary(max_size=40).map(_b64), any_text, json_values)
    payload: dict[str, Any] = {"metadata": draw(st.dictionaries(keys, values, max_size=3))}
    if draw(st.booleans()):
        payload["data"] = draw(st.one_of(st.binary(max_size=80).map(_b64), json_values))
    return payload


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(_dump),
    json_values.map(_dump_escaped),
    st.lists(payload_dicts(), max_size=3).map(lambda payloads: _dump({"payloads": payloads})),
    st.lists(payload_dicts(), max_size=3).map(lambda payloads: _dump_escaped({"payloads": payloads})),
    st.integers(min_value=1, max_value=30_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=1, max_value=12_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(min_value=MAX_BODY + 1, max_value=3 * MAX_BODY).map(lambda size: b" " * size),
)
# Any header value HTTP/1.1 can carry (h11 refuses to send the others).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
).map(str.strip)


def _send(http: httpx.Client, method: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response | None:
    raw_headers = {name: value.encode("latin-1") for name, value in headers.items()}
    try:
        return http.request(method, path, content=body, headers=raw_headers)
    except httpx.TransportError:
        # The server answered (413) and closed before the whole body went out: not a 5xx.
        assert len(body) > MAX_BODY
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=st.sampled_from(["/decode", "/encode"]), body=bodies, from_ui=st.booleans())
def test_no_body_gets_a_5xx(codec: CodecProcess, http: httpx.Client, path: str, body: bytes, from_ui: bool) -> None:
    """An operator's (or a stolen token's) calls: every body is answered, none with a 5xx."""
    response = _send(http, "POST", path, body, {**codec.auth, **({"origin": UI} if from_ui else {})})
    if response is not None:
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert list(response.json()) == ["error"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "OPTIONS", "DELETE"]),
    path=st.sampled_from(["/decode", "/encode", "/decode/", "/", "/unknown", "/%ff"]),
    body=bodies,
    authorization=st.one_of(st.none(), header_text, header_text.map(lambda t: f"Bearer {t}.{t}.{t}".strip())),
    host=st.one_of(st.none(), header_text),
    origin=st.one_of(st.none(), st.just(UI), header_text),
    content_type=st.one_of(st.none(), st.just("application/json"), header_text),
)
def test_no_request_gets_a_5xx(
    codec: CodecProcess,
    http: httpx.Client,
    method: str,
    path: str,
    body: bytes,
    authorization: str | None,
    host: str | None,
    origin: str | None,
    content_type: str | None,
) -> None:
    """Anyone's calls: any method, path, token, Host, Origin and body; no 5xx, no plaintext."""
    headers = {"authorization": authorization, "host": host, "origin": origin, "content-type": content_type}
    response = _send(http, method, path, body, {name: value for name, value in headers.items() if value is not None})
    if response is not None:
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if method == "POST" and path in ("/decode", "/encode"):
            assert response.status_code in (400, 401, 403, 413, 421), response.status_code
        if response.status_code >= 400 and method != "OPTIONS":
            assert list(response.json()) == ["error"]


# Slow clients: read deadlines and a connection cap (a codec server with small ones) ------------

GUARD_LIMIT, GUARD_READ_TIMEOUT = 20, 2.0


@dataclass
class Dribbler:
    """A connection that sends `first`, then one byte every 0.25 s, until the server closes it."""

    opened: float = 0.0
    cut: float | None = None
    received: bytes = b""

    @property
    def lasted(self) -> float:
        return (self.cut or float("inf")) - self.opened

    @property
    def status(self) -> int | None:
        parts = self.received.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def dribble(port: int, client: Dribbler, first: bytes, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client.opened = time.monotonic()

    async def read_until_closed() -> None:
        try:
            while chunk := await reader.read(4096):
                client.received += chunk
        except ConnectionError:
            pass
        client.cut = time.monotonic()

    reading = asyncio.create_task(read_until_closed())
    try:
        writer.write(first)
        while not reading.done() and not stop.is_set():
            await asyncio.wait([reading], timeout=0.25)
            if not reading.done():
                writer.write(b"a")
                await writer.drain()
    except ConnectionError:
        pass
    await asyncio.wait([reading], timeout=5)
    reading.cancel()
    writer.transport.abort()


@pytest.fixture(scope="module")
def guarded_codec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodecProcess]:
    """`temporal-ciba codec-server` with CIBA_CODEC_MAX_CONNECTIONS=20 and CIBA_CODEC_READ_TIMEOUT=2."""
    port = free_port()
    token = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    log = tmp_path_factory.mktemp("guarded-codec-server") / "codec-server.log"
    process = start_codec_server(
        log,
        CIBA_PAYLOAD_KEY=base64.b64encode(PAYLOAD_KEY).decode(),
        CIBA_CODEC_PORT=str(port),
        CIBA_CODEC_OPERATOR_TOKENS=token,
        CIBA_CODEC_MAX_CONNECTIONS=str(GUARD_LIMIT),
        CIBA_CODEC_READ_TIMEOUT=str(GUARD_READ_TIMEOUT),
    )
    wait_for_port(port, process, log)
    yield CodecProcess(f"http://127.0.0.1:{port}", port, process, PAYLOAD_KEY, token)
    process.terminate()
    process.wait(timeout=10)


def _head(codec: CodecProcess, length: int | None = None) -> bytes:
    lines = [
        "POST /decode HTTP/1.1",
        f"host: 127.0.0.1:{codec.port}",
        f"authorization: Bearer {codec.token}",
        "content-type: application/json",
    ]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n").encode()


async def test_slow_heads_and_bodies_are_cut_and_connections_beyond_the_cap_refused(
    guarded_codec: CodecProcess,
) -> None:
    """A header byte every 0.25 s (which resets uvicorn's keep-alive timer) no longer holds a
    connection: heads are cut at the read timeout, bodies get 408; while 20 are open the next
    request gets 503 at once; once they are cut, the normal path answers again."""
    stop = asyncio.Event()
    heads = [Dribbler() for _ in range(GUARD_LIMIT - 4)]
    bodies = [Dribbler() for _ in range(4)]
    # The bodies first: their heads get in while they are within the cap.
    tasks = [
        asyncio.create_task(dribble(guarded_codec.port, c, _head(guarded_codec, 60_000) + b'\r\n{"payloads":[', stop))
        for c in bodies
    ]
    body = await asyncio.to_thread(sealed_body, guarded_codec.payload_key, SECRET)
    try:
        await wait_for_opened(bodies, guarded_codec)
        tasks += [
            asyncio.create_task(dribble(guarded_codec.port, c, _head(guarded_codec) + b"x-slow: ", stop)) for c in heads
        ]
        await wait_for_opened([*bodies, *heads], guarded_codec)
        async with httpx.AsyncClient(base_url=guarded_codec.url, timeout=10) as http:
            started = time.monotonic()
            beyond = await http.post("/decode", content=body, headers=guarded_codec.auth)
            refused_after = time.monotonic() - started
            deadline = time.monotonic() + GUARD_READ_TIMEOUT + 5
            while any(c.cut is None for c in [*heads, *bodies]) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            after = await http.post("/decode", content=body, headers=guarded_codec.auth)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    head_times = sorted(c.lasted for c in heads)
    body_times = sorted(c.lasted for c in bodies)
    print(f"beyond the cap {beyond.status_code} in {refused_after:.2f} s; heads cut after {head_times[0]:.1f}..")
    assert beyond.status_code == 503 and refused_after < 2  # at once, not queued
    assert GUARD_READ_TIMEOUT / 2 <= head_times[0] and head_times[-1] <= GUARD_READ_TIMEOUT + 2
    assert {c.status for c in bodies} == {408} and body_times[-1] <= GUARD_READ_TIMEOUT + 4
    assert all(c.status is None for c in heads)  # cut, never answered: no head arrived
    assert after.status_code == 200
    assert json_format.ParseDict(after.json(), Payloads()).payloads[0].data == SECRET


async def wait_for_opened(clients: list[Dribbler], codec: CodecProcess) -> None:
    """Until each client is connected and the server process holds that many connections more."""
    deadline = time.monotonic() + 10
    while any(c.opened == 0.0 for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    def established() -> int:
        connections = psutil.Process(codec.process.pid).net_connections("tcp")
        return sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == codec.port for c in connections)

    while established() < sum(c.cut is None for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
