"""The DPoP key of an approval (RFC 9449), the same on every worker and never in history.

The token request binds the access token to a key (`cnf.jkt`); whoever later uses or revokes
that token must prove possession of the same key, maybe on another worker after a crash or a
move. So the key is derived, like the token sealing key, from the token key (CIBA_TOKEN_KEY)
and the approval's auth_req_id: every worker that may open the sealed token can rebuild the
key, nothing of it is written to history, and no two approvals share one.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from temporal_ciba.ciba import DPoPKey
from temporal_ciba.crypto._keys import derive_key

# The order of the P-256 group (FIPS 186-4 D.1.2.3): a private key is an integer in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class DPoPKeys:
    """One P-256 DPoP key per auth_req_id, derived from the token key (HKDF-SHA256, RFC 5869)."""

    def __init__(self, master_key: bytes) -> None:
        self._seed = derive_key(master_key, "dpop key v1")

    def __repr__(self) -> str:
        return "DPoPKeys()"

    def for_approval(self, auth_req_id: str) -> DPoPKey:
        # 384 bits reduced modulo n: the bias is below 2**-128 (FIPS 186-4 B.4.1's method).
        material = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=auth_req_id.encode()).derive(self._seed)
        scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
        return DPoPKey(ec.derive_private_key(scalar, ec.SECP256R1()))
