"""Encrypted ID tokens (OIDC Core 1.0 §10.2): a JWE around the signed ID token.

FAPI-CIBA deployments that register `id_token_encrypted_response_alg` receive them. The JWE is
decrypted with the client's key before the usual validation of the inner JWS. Nothing here does
I/O.

joserfc does the JWE (pyjwt has no JWE): it is typed, built on `cryptography`, and Authlib's
successor for JOSE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, RSAKey

from ._errors import TokenRejected

# Key management: RSA-OAEP-256 (FAPI) and ECDH-ES with or without key wrap; never RSA1_5 (a
# padding oracle) nor `dir` (a shared secret). Content encryption: AES-GCM or AES-CBC-HMAC.
KEY_ALGS = ("RSA-OAEP-256", "RSA-OAEP", "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW")
CONTENT_ALGS = ("A256GCM", "A128GCM", "A128CBC-HS256", "A256CBC-HS512")
# RFC 7519 §5.3: an OP may replicate claims (iss, aud) as header parameters, as oidc-provider
# does; they are not trusted here (the inner, signed claims are validated), so they are allowed.
# `crit` is still checked.
_REGISTRY = JWERegistry(algorithms=[*KEY_ALGS, *CONTENT_ALGS], strict_check_header=False)


@dataclass(frozen=True, repr=False)
class IdTokenDecryptionKey:
    """The client's private key for encrypted ID tokens; never shown in repr()."""

    key: RSAKey | ECKey

    def __repr__(self) -> str:
        return f"IdTokenDecryptionKey(kid={self.key.kid!r})"


def load_id_token_decryption_key(path: Path) -> IdTokenDecryptionKey:
    """A private RSA or EC key: a JWK (or a JWKS holding one key) or a PEM file."""
    text = path.read_text()
    try:
        if text.lstrip().startswith("{"):
            document = json.loads(text)
            if "keys" in document:
                if not isinstance(document["keys"], list) or len(document["keys"]) != 1:
                    raise ValueError("a JWKS for the decryption key must hold exactly one key")
                document = document["keys"][0]
            if "d" not in document:
                raise ValueError("the JWK is a public key; decryption needs the private key")
            key: RSAKey | ECKey = (RSAKey if document.get("kty") == "RSA" else ECKey).import_key(document)
        else:
            try:
                key = RSAKey.import_key(text)
            except (JoseError, ValueError, TypeError):
                key = ECKey.import_key(text)
    except (JoseError, KeyError, TypeError) as exc:
        raise ValueError(f"not an RSA or EC private key ({type(exc).__name__})") from None
    if not key.is_private:
        raise ValueError("the key is a public key; decryption needs the private key")
    return IdTokenDecryptionKey(key)


def is_encrypted(token: str) -> bool:
    """RFC 7516 §7.1: a JWE compact serialization has five parts (a JWS has three)."""
    return token.count(".") == 4


def decrypt_id_token(token: str, key: IdTokenDecryptionKey | None) -> str:
    """The signed ID token inside an encrypted one.

    OIDC Core §10.2: "decrypt, then validate the signature". A token that is not encrypted is
    refused when a key is configured, since the registration asked the OP to encrypt every ID
    token."""
    if key is None:
        if is_encrypted(token):
            raise TokenRejected(
                "id_token_encrypted", "id_token", "the ID token is encrypted and no decryption key is configured"
            )
        return token
    if not is_encrypted(token):
        raise TokenRejected("id_token_not_encrypted", "id_token", "the ID token is not encrypted", "a JWE")
    try:
        plaintext = jwe.decrypt_compact(token, key.key, registry=_REGISTRY).plaintext
    except (JoseError, ValueError) as exc:
        # joserfc names the failure (unsupported alg, bad tag); its messages carry no key material.
        raise TokenRejected(
            "id_token_decryption_failed", "id_token", f"the ID token does not decrypt ({type(exc).__name__})"
        ) from None
    assert plaintext is not None  # joserfc sets it when decryption succeeds; the assert only narrows types
    return plaintext.decode("utf-8", errors="replace")
