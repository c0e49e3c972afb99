"""Mutual TLS (RFC 8705): the client certificate presented to the OP, and what it binds.

RFC 8705 §2: with `tls_client_auth` or `self_signed_tls_client_auth` the client authenticates
by the certificate of its TLS connection. §3: the OP binds the access tokens it issues over that
connection to the certificate, as `cnf.x5t#S256` (the base64url SHA-256 of the DER
certificate), and a resource server accepts such a token only over a connection presenting the
same certificate. So the certificate is presented on every call to the OP (authentication,
token, revocation) and to the resource server the tokens open.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1: x5t#S256, the base64url (unpadded) SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate (PEM, optionally followed by its chain) and its private key (PEM)."""

    cert: Path
    key: Path

    def __post_init__(self) -> None:
        # Fail at start, not on the first request: both files readable, the key the certificate's.
        try:
            ssl.create_default_context().load_cert_chain(self.cert, self.key)
        except OSError as exc:  # ssl.SSLError is one
            raise ValueError(f"cannot use {self.cert} with {self.key}: {exc}") from None

    @property
    def thumbprint(self) -> str:
        """x5t#S256 of the leaf certificate: what the OP puts in `cnf` of the tokens it binds."""
        leaf = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return certificate_thumbprint(leaf.public_bytes(Encoding.DER))

    def ssl_context(self) -> ssl.SSLContext:
        """httpx's default trust (the system's, or SSL_CERT_FILE), presenting this certificate."""
        context = httpx.create_ssl_context()
        context.load_cert_chain(self.cert, self.key)
        return context
