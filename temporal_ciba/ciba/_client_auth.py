"""Client authentication, used alike at the token and backchannel authentication endpoints.

CIBA Core 1.0 §7.1: the client authenticates to the backchannel authentication endpoint
exactly as it does to the token endpoint. Methods: OIDC Core 1.0 §9 (client_secret_basic,
client_secret_post, private_key_jwt with the assertion of RFC 7523 §3) and RFC 8705 §2
(tls_client_auth, self_signed_tls_client_auth: the TLS connection's client certificate).

Nothing here does I/O: `apply` adds the credentials to a form and its headers.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TLS_CLIENT_AUTH_METHODS = ("tls_client_auth", "self_signed_tls_client_auth")
# RFC 7523 §3: a short-lived assertion; the OP remembers its jti until exp to stop replays.
ASSERTION_LIFETIME_SECONDS = 60


class ClientAuth(Protocol):
    client_id: str
    method: str

    def apply(
        self,
        form: dict[str, Any],
        headers: dict[str, str],
        *,
        audience: str,
        now: float,
        allowed_algs: tuple[str, ...] | None = None,
    ) -> None:
        """Add this client's credentials to a request form and its headers."""


class _ClientSecret:
    """A client authenticated by a shared secret, which never shows in repr()."""

    method: str

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self._secret = client_secret

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client_id!r})"


class ClientSecretBasic(_ClientSecret):
    """RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded client_id and secret."""

    method = "client_secret_basic"

    def apply(
        self,
        form: dict[str, Any],
        headers: dict[str, str],
        *,
        audience: str,
        now: float,
        allowed_algs: tuple[str, ...] | None = None,
    ) -> None:
        userpass = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(userpass).decode("ascii")


class ClientSecretPost(_ClientSecret):
    """RFC 6749 §2.3.1: client_id and client_secret in the request body."""

    method = "client_secret_post"

    def apply(
        self,
        form: dict[str, Any],
        headers: dict[str, str],
        *,
        audience: str,
        now: float,
        allowed_algs: tuple[str, ...] | None = None,
    ) -> None:
        form["client_id"] = self.client_id
        form["client_secret"] = self._secret


@dataclass(frozen=True, repr=False)
class ClientSigningKey:
    """A private key for private_key_jwt and the algorithms it can sign with, preferred first."""

    key: Any
    algorithms: tuple[str, ...]
    kid: str | None = None

    def __repr__(self) -> str:
        return f"ClientSigningKey(algorithms={self.algorithms!r}, kid={self.kid!r})"

    def choose_algorithm(self, allowed: tuple[str, ...] | None, *, purpose: str = "private_key_jwt") -> str:
        """The first of our algorithms the OP accepts.

        For private_key_jwt, that is its token_endpoint_auth_signing_alg_values_supported."""
        if allowed is None:
            return self.algorithms[0]
        for alg in self.algorithms:
            if alg in allowed:
                return alg
        raise ValueError(f"the OP accepts none of this key's algorithms {', '.join(self.algorithms)} for {purpose}")


def _algorithms_for(key: Any) -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPrivateKey):
        return ("PS256", "RS256")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return (by_curve[key.curve.name],)
        raise ValueError(f"unsupported EC curve {key.curve.name}")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ("EdDSA",)
    raise ValueError("the private key must be RSA, EC (P-256/384/521) or Ed25519")


def load_client_signing_key(path: Path, *, alg: str | None = None, kid: str | None = None) -> ClientSigningKey:
    """Load a private JWK (JSON, or a JWKS holding one key) or a PEM private key.

    The algorithm is `alg` if given, else the JWK's `alg`, else every algorithm the key type
    allows (for RSA: PS256 then RS256), narrowed later to what the OP accepts.
    """
    text = path.read_text()
    if text.lstrip().startswith("{"):
        document = json.loads(text)
        if "keys" in document:
            keys = document["keys"]
            if not isinstance(keys, list) or len(keys) != 1:
                raise ValueError("a JWKS for the client key must hold exactly one key")
            document = keys[0]
        if "d" not in document:
            raise ValueError("the JWK is a public key; private_key_jwt needs the private key")
        jwk = jwt.PyJWK(document)
        key = jwk.key
        alg = alg or document.get("alg")
        kid = kid or document.get("kid")
    else:
        key = load_pem_private_key(text.encode(), password=None)
    algorithms = _algorithms_for(key)
    if alg is not None:
        if alg not in algorithms:
            raise ValueError(f"algorithm {alg} does not fit this key (it can use {', '.join(algorithms)})")
        algorithms = (alg,)
    return ClientSigningKey(key=key, algorithms=algorithms, kid=kid)


class PrivateKeyJwt:
    """OIDC Core 1.0 §9 private_key_jwt: a JWT signed with the client's key (RFC 7523 §3).

    iss = sub = client_id, aud = the OP's issuer identifier (accepted by OPs for every endpoint,
    and what RFC 7523bis recommends), a random jti, iat, and exp at most a minute ahead.
    """

    method = "private_key_jwt"

    def __init__(self, client_id: str, signing_key: ClientSigningKey) -> None:
        self.client_id = client_id
        self._signing_key = signing_key

    def __repr__(self) -> str:
        return f"PrivateKeyJwt(client_id={self.client_id!r}, key={self._signing_key!r})"

    def assertion(self, *, audience: str, now: float, allowed_algs: tuple[str, ...] | None = None) -> str:
        alg = self._signing_key.choose_algorithm(allowed_algs)
        issued_at = int(now)
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(24),
            "iat": issued_at,
            "exp": issued_at + ASSERTION_LIFETIME_SECONDS,
        }
        headers = {"kid": self._signing_key.kid} if self._signing_key.kid else None
        return jwt.encode(claims, self._signing_key.key, algorithm=alg, headers=headers)

    def apply(
        self,
        form: dict[str, Any],
        headers: dict[str, str],
        *,
        audience: str,
        now: float,
        allowed_algs: tuple[str, ...] | None = None,
    ) -> None:
        form["client_id"] = self.client_id
        form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        form["client_assertion"] = self.assertion(audience=audience, now=now, allowed_algs=allowed_algs)


class TlsClientAuth:
    """RFC 8705 §2: the client authenticates by the certificate of its TLS connection.

    The certificate is PKI-issued for tls_client_auth (§2.1), or registered in its JWKS for
    self_signed_tls_client_auth (§2.2), so the request names only the client: "the client_id
    parameter ... MUST be included".

    The certificate itself is presented by the HTTP client (`temporal_ciba.ciba._mtls`)."""

    def __init__(self, client_id: str, method: str = "tls_client_auth") -> None:
        if method not in TLS_CLIENT_AUTH_METHODS:
            raise ValueError(f"not a mutual-TLS client authentication method: {method}")
        self.client_id = client_id
        self.method = method

    def __repr__(self) -> str:
        return f"TlsClientAuth(client_id={self.client_id!r}, method={self.method!r})"

    def apply(
        self,
        form: dict[str, Any],
        headers: dict[str, str],
        *,
        audience: str,
        now: float,
        allowed_algs: tuple[str, ...] | None = None,
    ) -> None:
        form["client_id"] = self.client_id
