"""DPoP proofs (RFC 9449): sender-constrained tokens for the client and a check for resource servers.

The client proves possession of a private key with a fresh signed JWT on each request (§4.2);
the OP binds the tokens it issues to that key's thumbprint (`cnf.jkt`, §6), so a stolen token is
useless without the key. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

DPOP_JWT_TYPE = "dpop+jwt"
# RFC 9449 §4.2: the proof is good for one request; a resource server accepts a short window.
PROOF_MAX_AGE_SECONDS = 60
# RFC 9449 §5.1: the OP answers `use_dpop_nonce` with a DPoP-Nonce header to use in the retry.
USE_DPOP_NONCE = "use_dpop_nonce"
_PROOF_ALGS = ("ES256", "PS256")  # FAPI's two; what our keys sign and what a resource server here accepts


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 of the key's required members, in lexicographic order, no whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    members = required.get(jwk.get("kty", ""))
    if members is None or any(not isinstance(jwk.get(name), str) for name in members):
        raise ValueError("unsupported or incomplete JWK")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url of the SHA-256 of the access token's ASCII."""
    return _b64url(hashlib.sha256(access_token.encode("ascii")).digest())


@dataclass(frozen=True, repr=False)
class DPoPKey:
    """A P-256 key that signs DPoP proofs (ES256); never shown in repr()."""

    private_key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"DPoPKey(jkt={self.thumbprint!r})"

    @property
    def public_jwk(self) -> dict[str, str]:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key()))
        return {name: jwk[name] for name in ("kty", "crv", "x", "y")}

    @property
    def thumbprint(self) -> str:
        """The `jkt` the OP puts in the token's `cnf` claim (RFC 9449 §6.1)."""
        return jwk_thumbprint(self.public_jwk)

    def proof(
        self, *, htm: str, htu: str, now: float, nonce: str | None = None, access_token: str | None = None
    ) -> str:
        """RFC 9449 §4.2: a DPoP proof for one request.

        typ dpop+jwt, the public key in the header; jti, htm, htu, iat; the server's nonce when it
        gave one (§8); `ath` when the request carries an access token."""
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(24), "htm": htm, "htu": htu, "iat": int(now)}
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        headers = {"typ": DPOP_JWT_TYPE, "jwk": self.public_jwk}
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers=headers)


class InvalidDPoPProof(ValueError):
    """RFC 9449 §7.1 `invalid_dpop_proof`: the proof does not prove possession for this request."""


def verify_proof(
    proof: str, *, htm: str, htu: str, access_token: str, now: float, leeway: float = 5.0
) -> tuple[str, str]:
    """RFC 9449 §4.3 for a resource server: check the proof for this request and token.

    Returns (the key's thumbprint, the proof's jti) so the caller can compare `cnf.jkt` and
    refuse a replayed jti."""
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError:
        raise InvalidDPoPProof("the DPoP proof is not a JWT") from None
    if header.get("typ") != DPOP_JWT_TYPE:
        raise InvalidDPoPProof("the DPoP proof's typ is not dpop+jwt")
    alg, jwk = header.get("alg"), header.get("jwk")
    if alg not in _PROOF_ALGS or not isinstance(jwk, dict) or "d" in jwk:
        raise InvalidDPoPProof("the DPoP proof needs an ES256 or PS256 signature and a public jwk")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
        claims = jwt.decode(
            proof,
            key,
            algorithms=[alg],
            options={"require": ["jti", "htm", "htu", "iat"], "verify_iat": False, "verify_aud": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidDPoPProof("the DPoP proof's signature or claims are invalid") from None
    if claims["htm"] != htm or claims["htu"] != htu:
        raise InvalidDPoPProof("the DPoP proof is for another request (htm, htu)")
    iat = claims["iat"]
    if not isinstance(iat, int) or abs(now - iat) > PROOF_MAX_AGE_SECONDS + leeway:
        raise InvalidDPoPProof("the DPoP proof is too old or from the future (iat)")
    if claims.get("ath") != access_token_hash(access_token):
        raise InvalidDPoPProof("the DPoP proof is for another access token (ath)")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        raise InvalidDPoPProof("the DPoP proof has no jti")
    return jwk_thumbprint(jwk), jti
