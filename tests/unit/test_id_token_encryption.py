"""Encrypted ID tokens (OIDC Core §10.2): decrypted before validation, only with the algorithms
we allow, and refused when the key and the token disagree (end to end:
tests/e2e/test_encrypted_id_token.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwe
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, RSAKey

from temporal_ciba.ciba import TokenRejected
from temporal_ciba.ciba.id_token_encryption import (
    IdTokenDecryptionKey,
    decrypt_id_token,
    load_id_token_decryption_key,
)
from temporal_ciba.settings import ConfigError, OPSettings, load_settings

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
    ("token", "key", "code"),
    [
        (SIGNED, KEY, "id_token_not_encrypted"),  # the registration asked for encryption: a downgrade
        (encrypted(), None, "id_token_encrypted"),
        (encrypted(alg="RSA1_5"), KEY, "id_token_decryption_failed"),  # a padding oracle: never
        (encrypted(key=RSAKey.generate_key(2048, private=True)), KEY, "id_token_decryption_failed"),
    ],
)
def test_refused(token: str, key: IdTokenDecryptionKey | None, code: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        decrypt_id_token(token, key)
    assert caught.value.code == code


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
