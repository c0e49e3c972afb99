"""The OP's signing keys (OIDC Core 1.0 §10.1.1), fetched from jwks_uri and cached.

They are refetched once on an unknown kid, at most once per `min_refetch_seconds` so forged kids
cannot make us hammer the OP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ._errors import ProtocolError

_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


@dataclass(frozen=True)
class PublicKey:
    """One public signing key of the OP: its kid, the alg its JWK declares (if any), the key."""

    kid: str | None
    alg: str | None
    key: Any


def parse_jwks(document: dict[str, Any]) -> list[PublicKey]:
    """The usable public signing keys of a JWKS; symmetric, encryption and unparseable keys are skipped."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ProtocolError("jwks_uri: the document has no 'keys' array (RFC 7517 §5)")
    usable = []
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig" or "d" in entry:
            continue
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        usable.append(PublicKey(kid=entry.get("kid"), alg=entry.get("alg"), key=key))
    return usable


def key_fits_algorithm(public_key: PublicKey, alg: str) -> bool:
    """The key type must be the one the algorithm is defined for (RFC 7518 §3.1)."""
    if public_key.alg is not None and public_key.alg != alg:
        return False
    key = public_key.key
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _EC_CURVES[alg]
    if alg in ("EdDSA", "Ed25519"):
        return isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
    return False


def select_keys(keys: Sequence[PublicKey], *, alg: str, kid: str | None) -> list[PublicKey]:
    candidates = [key for key in keys if key_fits_algorithm(key, alg)]
    if kid is not None:
        candidates = [key for key in candidates if key.kid == kid]
    return candidates


class JwksCache:
    """Keys from `fetch`, kept for `ttl_seconds`; `refresh` refetches unless done very recently.

    Every decision to fetch is taken under the lock, so concurrent callers share one fetch:
    callers that waited on the lock while another fetched reuse the keys it got, and the
    cool-down (`min_refetch_seconds`, counted from the last attempt, failed or not) holds however
    many validations with unknown kids arrive at once (OIDC Core 1.0 §10.1.1: refetch on an
    unknown kid, but a forged kid must not make us hammer the OP).
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[dict[str, Any]]],
        *,
        ttl_seconds: float = 600.0,
        min_refetch_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._keys: list[PublicKey] | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._generation = 0  # how many fetches have succeeded
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._keys is not None and self._clock() - self._fetched_at <= self._ttl

    async def keys(self) -> list[PublicKey]:
        if not self._fresh():
            async with self._lock:
                # Checked again under the lock: a caller that waited reuses what the holder fetched.
                if not self._fresh():
                    await self._load()
        assert self._keys is not None
        return self._keys

    async def refresh(self) -> None:
        """Refetch for an unknown kid, unless the keys were fetched too recently to try again.

        The generation is taken before waiting for the lock: if a fetch succeeded meanwhile, the
        keys this caller missed its kid in are already replaced, and it reuses the new ones.
        """
        seen = self._generation
        async with self._lock:
            if self._generation != seen or self._clock() - self._attempted_at < self._min_refetch:
                return
            await self._load()

    async def _load(self) -> None:
        """Fetch and parse the keys; the caller holds the lock."""
        self._attempted_at = self._clock()
        keys = parse_jwks(await self._fetch())
        self._keys, self._fetched_at = keys, self._clock()
        self._generation += 1
