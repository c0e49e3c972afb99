"""Encrypted ID tokens (OIDC Core §10.2).

Decrypted before validation, only with the algorithms we allow, and refused when the key and the
token disagree (end to end: tests/e2e/test_encrypted_id_token.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwe
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, RSAKey

from temporal_ciba._settings import ConfigError, OPSettings, load_settings
from temporal_ciba.ciba import TokenRejected
from temporal_ciba.ciba._id_token_encryption import (
    IdTokenDecryptionKey,
    decrypt_id_token,
    is_encrypted,
    load_id_token_decryption_key,
)

SIGNED = "eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"  # a JWS: three parts
RSA = RSAKey.generate_key(2048, private=True)
KEY = IdTokenDecryptionKey(RSA)
ANY_ALG = JWERegistry(algorithms=["RSA-OAEP-256", "RSA1_5", "A256GCM", "A128GCM"], strict_check_header=False)


def encrypted(alg: str = "RSA-OAEP-256", enc: str = "A256GCM", key: RSAKey | ECKey = RSA) -> str:
    header = {"alg": alg, "enc": enc, "cty": "JWT", "iss": "https://op.example.test", "aud": "agent"}
    return jwe.encrypt_compact(header, SIGNED, key, registry=ANY_ALG)


def test_encrypted_id_token_opens_to_the_signed_one() -> None:
    assert decrypt_id_token(encrypted(), KEY) == SIGNED
    assert decrypt_id_token(encrypted(enc="A128GCM"), KEY) == SIGNED


@pytest.mark.parametrize(
    ("token", "key", "code", "expected"),
    [
        (SIGNED, KEY, "id_token_not_encrypted", "a JWE"),  # the registration asked for encryption: a downgrade
        (encrypted(), None, "id_token_encrypted", None),
        (encrypted(alg="RSA1_5"), KEY, "id_token_decryption_failed", None),  # a padding oracle: never
        (encrypted(key=RSAKey.generate_key(2048, private=True)), KEY, "id_token_decryption_failed", None),
    ],
)
def test_refused(token: str, key: IdTokenDecryptionKey | None, code: str, expected: str | None) -> None:
    """The stable code, the claim checked (the ID token) and what it had to be."""
    with pytest.raises(TokenRejected) as caught:
        decrypt_id_token(token, key)
    assert (caught.value.code, caught.value.claim, caught.value.expected) == (code, "id_token", expected)


def test_no_key_no_encryption_changes_nothing() -> None:
    assert decrypt_id_token(SIGNED, None) == SIGNED


def test_keys_load_from_pem_jwk_and_jwks(tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    private = rsa.generate_private_key(65537, 2048)
    encoding = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pem.write_bytes(private.private_bytes(*encoding))
    assert isinstance(load_id_token_decryption_key(pem).key, RSAKey)
    jwks = tmp_path / "k.json"
    jwks.write_text(json.dumps({"keys": [ECKey.generate_key("P-256", private=True).as_dict(private=True)]}))
    assert isinstance(load_id_token_decryption_key(jwks).key, ECKey)
    public = tmp_path / "public.json"
    public.write_text(json.dumps(RSA.as_dict(private=False)))
    with pytest.raises(ValueError, match="public key"):
        load_id_token_decryption_key(public)


def test_setting_names_a_bad_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    for name, value in {
        "CIBA_ISSUER": "https://op.example.test",
        "CIBA_CLIENT_ID": "agent",
        "CIBA_CLIENT_SECRET": "s3cret",
        "CIBA_ID_TOKEN_DECRYPTION_KEY": str(bad),
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^configuration error: CIBA_ID_TOKEN_DECRYPTION_KEY: ") as caught:
        load_settings(OPSettings)
    assert "\n" not in str(caught.value)


def test_the_keys_repr_shows_its_kid_only() -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "enc-1"}, private=True)
    assert repr(IdTokenDecryptionKey(key)) == "IdTokenDecryptionKey(kid='enc-1')"


def test_an_rsa_jwk_loads_as_an_rsa_key_whatever_whitespace_leads(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("\n  " + json.dumps(RSA.as_dict(private=True)))
    key = load_id_token_decryption_key(path).key
    assert isinstance(key, RSAKey) and key.is_private
    assert decrypt_id_token(encrypted(), IdTokenDecryptionKey(key)) == SIGNED


def test_an_ec_pem_loads_as_an_ec_key(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    key = load_id_token_decryption_key(path).key
    assert isinstance(key, ECKey) and key.is_private


@pytest.mark.parametrize(
    "document,message",
    [
        ({"keys": []}, "exactly one key"),
        ({"keys": [RSA.as_dict(private=True), RSA.as_dict(private=True)]}, "exactly one key"),
        ({"keys": RSA.as_dict(private=True)}, "exactly one key"),
        ({"keys": [RSA.as_dict(private=False)]}, "public key"),
    ],
    ids=["empty_jwks", "two_keys", "keys_not_a_list", "public_key_in_a_jwks"],
)
def test_a_jwks_must_hold_exactly_one_private_key(tmp_path: Path, document: dict[str, object], message: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message):
        load_id_token_decryption_key(path)


def test_a_public_pem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    path.write_bytes(RSA.as_pem(private=False))
    with pytest.raises(ValueError, match="public key"):
        load_id_token_decryption_key(path)


def test_a_jwk_of_no_known_type_is_refused_as_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"kty": "oct", "k": "c2VjcmV0", "d": "x"}))
    with pytest.raises(ValueError, match="not an RSA or EC private key"):
        load_id_token_decryption_key(path)


def test_a_jwe_has_five_parts_a_jws_three() -> None:
    assert is_encrypted(encrypted()) and not is_encrypted(SIGNED)
    assert not is_encrypted("a.b.c.d") and not is_encrypted("a.b.c.d.e.f")


def test_a_plaintext_that_is_not_utf8_opens_with_replacement_characters() -> None:
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    token = jwe.encrypt_compact(header, b"\xffabc", RSA, registry=ANY_ALG)
    assert decrypt_id_token(token, KEY) == "\ufffdabc"


def test_an_ec_key_opens_an_ecdh_es_token() -> None:
    ec_key = ECKey.generate_key("P-256", private=True)
    registry = JWERegistry(algorithms=["ECDH-ES+A128KW", "A128GCM"])
    token = jwe.encrypt_compact({"alg": "ECDH-ES+A128KW", "enc": "A128GCM"}, SIGNED, ec_key, registry=registry)
    assert decrypt_id_token(token, IdTokenDecryptionKey(ec_key)) == SIGNED
