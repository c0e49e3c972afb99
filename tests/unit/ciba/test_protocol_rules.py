"""Small rules of the protocol package, each named in its test.

one-line error text from untrusted input, the typed OAuth errors, transport failures named in one
line, and the algorithms a client key signs with."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from temporal_ciba.ciba import OAuthError, load_client_signing_key
from temporal_ciba.ciba._discovery import transport_cause
from temporal_ciba.ciba._errors import AccessDenied, oauth_error, one_line


def test_one_line_rule_keeps_text_up_to_the_limit_and_cuts_longer_text_to_it() -> None:
    assert one_line("a" * 200) == "a" * 200
    assert one_line("a" * 201) == "a" * 197 + "..."
    assert one_line("ab\\ncd", 10) == "ab\\ncd"
    assert one_line("ab\ncd\x00ef  ", 10) == "ab cd ef"
    assert len(one_line("x" * 1000, 20)) == 20


def test_oauth_error_rule_types_known_codes_and_keeps_unknown_ones_short() -> None:
    known = oauth_error("access_denied", "no", status=403)
    assert isinstance(known, AccessDenied) and (known.description, known.status) == ("no", 403)
    unknown = oauth_error("x" * 100, "what\nnot", status=400)
    assert type(unknown) is OAuthError
    assert (unknown.error, unknown.description, unknown.status) == ("x" * 61 + "...", "what not", 400)
    assert oauth_error("access_denied").description is None


def test_transport_cause_rule_names_the_type_the_outer_message_and_the_known_cause() -> None:
    inner = OSError("[Errno 111] Connection refused")
    outer = httpx.ConnectError("could not connect")
    outer.__cause__ = inner
    inner.__cause__ = outer  # a cycle ends too
    assert transport_cause(outer) == (
        "ConnectError: connection refused (is the OP running on that port?) (could not connect)"
    )
    assert transport_cause(httpx.ConnectError("")) == "ConnectError"
    assert transport_cause(httpx.ReadTimeout("x" * 400)) == "ReadTimeout: " + "x" * 297 + "..."
    no_detail = httpx.ConnectError("")
    no_detail.__cause__ = OSError("")
    assert transport_cause(no_detail) == "ConnectError"
    hinted = httpx.ConnectError("")
    hinted.__cause__ = OSError("Name or service not known")
    assert transport_cause(hinted) == ("ConnectError: the OP's host name does not resolve (Name or service not known)")


def _pem(key: object, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@pytest.mark.parametrize(
    "key,alg",
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ec.generate_private_key(ec.SECP521R1()), "ES512"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_client_key_rule_signs_with_the_algorithm_of_its_curve(key: object, alg: str, tmp_path: Path) -> None:
    assert load_client_signing_key(_pem(key, tmp_path / "key.pem")).algorithms == (alg,)
