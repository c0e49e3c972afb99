"""What `audit verify` reads before it verifies, and what it prints after.

The OP's keys, from a JWKS file, a jwks_uri or each issuer's discovery document (an OP served
here on loopback, in a thread); the export's record lines (the header and blank lines skipped,
each record numbered by its line); and the summary of whose evidence the records rest on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from temporal_ciba.records import LogSigner
from temporal_ciba.records._audit import HTTP_TIMEOUT, Failure, Report, discover_jwks, load_jwks, parse_export, verify
from tests.support.records import logged_export

KEY = rsa.generate_private_key(65537, 2048)
OTHER_KEY = rsa.generate_private_key(65537, 2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid}


def jwks(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(entries)}


class LoopbackOP:
    """An HTTP server on 127.0.0.1 answering each path from `routes`: (status, JSON body, headers)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any, dict[str, str]]] = {}
        self.requests: list[str] = []
        op = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                op.requests.append(self.path)
                status, body, headers = op.routes.get(self.path, (404, {"error": "not_found"}, {}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def discovery(self, issuer: str, jwks_path: str) -> None:
        document = {"issuer": issuer, "token_endpoint": f"{self.url}/token", "jwks_uri": f"{self.url}{jwks_path}"}
        path = issuer.removeprefix(self.url) + "/.well-known/openid-configuration"
        self.routes[path] = (200, document, {})


@pytest.fixture
def local_op() -> Iterator[LoopbackOP]:
    served = LoopbackOP()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def kids(keys: list[Any]) -> list[str | None]:
    return [key.kid for key in keys]


def test_keys_are_read_from_a_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(jwk(KEY, "k1"), jwk(OTHER_KEY, "k2"))))
    keys = load_jwks(str(path))
    assert kids(keys) == ["k1", "k2"]
    assert keys[0].key.public_numbers() == KEY.public_key().public_numbers()


def test_a_jwks_file_that_is_no_json_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps([jwk(KEY, "k1")]))
    with pytest.raises(ValueError, match="not a JWKS"):
        load_jwks(str(path))


def test_keys_are_read_from_a_jwks_uri_on_loopback(local_op: LoopbackOP) -> None:
    local_op.routes["/jwks"] = (200, jwks(jwk(KEY, "k1")), {})
    assert kids(load_jwks(f"{local_op.url}/jwks")) == ["k1"]
    assert local_op.requests == ["/jwks"]


def test_a_jwks_uri_that_fails_redirects_or_answers_no_object_is_refused(local_op: LoopbackOP) -> None:
    local_op.routes["/gone"] = (500, {"error": "server_error"}, {})
    local_op.routes["/moved"] = (302, {}, {"location": "/jwks"})
    local_op.routes["/jwks"] = (200, jwks(jwk(KEY, "k1")), {})
    local_op.routes["/list"] = (200, [jwk(KEY, "k1")], {})
    with pytest.raises(httpx.HTTPStatusError):
        load_jwks(f"{local_op.url}/gone")
    with pytest.raises(httpx.HTTPStatusError):  # a redirect is not followed: the keys are where it was told
        load_jwks(f"{local_op.url}/moved")
    assert "/jwks" not in local_op.requests
    with pytest.raises(ValueError, match="not a JWKS"):
        load_jwks(f"{local_op.url}/list")


def test_a_jwks_uri_over_plain_http_off_loopback_is_refused() -> None:
    with pytest.raises(ValueError, match="https"):
        load_jwks("http://op.example/jwks")


async def test_each_issuer_s_keys_come_from_its_discovery_document_once(local_op: LoopbackOP) -> None:
    first, second = f"{local_op.url}/a", f"{local_op.url}/b"
    local_op.discovery(first, "/a/jwks")
    local_op.discovery(second, "/b/jwks")
    local_op.routes["/a/jwks"] = (200, jwks(jwk(KEY, "a1")), {})
    local_op.routes["/b/jwks"] = (200, jwks(jwk(OTHER_KEY, "b1")), {})
    keys = await discover_jwks([second, first, second])
    assert kids(keys) == ["a1", "b1"]  # every issuer, each once, in a fixed order
    assert local_op.requests == [
        "/a/.well-known/openid-configuration",
        "/a/jwks",
        "/b/.well-known/openid-configuration",
        "/b/jwks",
    ]


async def test_an_issuer_whose_jwks_uri_fails_or_redirects_is_refused(local_op: LoopbackOP) -> None:
    issuer = f"{local_op.url}/a"
    local_op.discovery(issuer, "/a/jwks")
    local_op.routes["/a/jwks"] = (503, {"error": "unavailable"}, {})
    with pytest.raises(httpx.HTTPStatusError):
        await discover_jwks([issuer])
    local_op.routes["/a/jwks"] = (302, {}, {"location": "/elsewhere"})
    with pytest.raises(httpx.HTTPStatusError):
        await discover_jwks([issuer])
    assert "/elsewhere" not in local_op.requests


async def test_an_issuer_over_plain_http_off_loopback_is_refused() -> None:
    with pytest.raises(ValueError, match="https"):
        await discover_jwks(["http://op.example"])


def test_an_https_jwks_uri_is_fetched_not_read_as_a_file() -> None:
    with pytest.raises(httpx.ConnectError):  # nothing listens on port 1
        load_jwks("https://127.0.0.1:1/jwks")


async def test_every_request_to_the_op_has_the_audit_s_timeouts(
    local_op: LoopbackOP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OP that stops answering fails the audit after HTTP_TIMEOUT, never hangs it."""
    timeouts: list[dict[str, float | None]] = []
    for client in (httpx.Client, httpx.AsyncClient):
        send = client.send

        def recording(self: Any, request: httpx.Request, *args: Any, send: Any = send, **kwargs: Any) -> Any:
            timeouts.append(request.extensions["timeout"])
            return send(self, request, *args, **kwargs)

        monkeypatch.setattr(client, "send", recording)
    issuer = f"{local_op.url}/a"
    local_op.discovery(issuer, "/a/jwks")
    local_op.routes["/a/jwks"] = (200, jwks(jwk(KEY, "a1")), {})
    load_jwks(f"{local_op.url}/a/jwks")
    await discover_jwks([issuer])
    assert timeouts == [HTTP_TIMEOUT.as_dict()] * 3


def test_the_export_s_records_are_numbered_by_their_line_without_the_header_or_blank_lines() -> None:
    header = json.dumps({"format": "temporal-ciba.decision-export.v1", "complete": True}, indent=1)
    lines = [header.replace("\n", ""), "", "   ", "[1]", "{not json", '{"record_id": "x"}']
    parsed = list(parse_export(lines))
    assert [number for number, _, _ in parsed] == [4, 5, 6]
    assert all(record is None for _, record, _ in parsed)
    assert [reason and reason.startswith("not a decision record") for _, _, reason in parsed] == [True] * 3
    assert parsed[0][2] == "not a decision record: not a JSON object"


def test_the_summary_says_whose_evidence_the_records_rest_on() -> None:
    signed = LogSigner(b"\x07" * 32).sign(5, b"\x00" * 32, datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    report = Report(
        failures=[Failure(3, "record r", "altered")],
        signed_by_op=["r1", "r2"],
        policy_approved=["r3"],
        log_only={"expired": ["r5"], "denied": ["r4", "r6"]},
        checkpoint=signed,
        records=4,
    )
    assert report.summary() == [
        "4 record(s) of a log of 5, checkpoint signed 2026-03-01T12:00:00+00:00; 1 failure(s)",
        "  approved, signed by the OP (an ID token verified against its keys): 2",
        "  approved by a policy without asking anyone (only the log attests it): 1",
        "  other outcomes (only the log attests them): denied 2, expired 1",
    ]
    assert Report().summary() == [
        "0 record(s) of a log of 0; 0 failure(s)",
        "  approved, signed by the OP (an ID token verified against its keys): 0",
        "  approved by a policy without asking anyone (only the log attests it): 0",
        "  other outcomes (only the log attests them): none",
    ]
    assert str(Failure(3, "record r", "altered")) == "line 3: record r: altered"
    assert str(Failure(None, "seq 2", "missing")) == "seq 2: missing"


def test_verify_passes_its_options_on() -> None:
    """A selection of the log verifies with allow_filtered, through `verify` as through `verify_export`."""
    signer = LogSigner(b"\x07" * 32)
    lines = logged_export([], signer, complete=False)
    header = json.loads(lines[0])
    header["checkpoint"] = json.loads(signer.sign(3, b"\x01" * 32).model_dump_json())
    lines = [json.dumps(header)]
    assert [failure.reason for failure in verify(lines, [], signer.public_key)] == [
        "not in this filtered export (pass --allow-filtered to verify a selection)"
    ]
    assert list(verify(lines, [], signer.public_key, allow_filtered=True)) == []
