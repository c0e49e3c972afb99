"""Client certificates for mutual TLS tests (RFC 8705).

One issued by a test CA (tls_client_auth) and self-signed ones (self_signed_tls_client_auth), with
their JWKs."""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import jwt
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from temporal_ciba.ciba import ClientCertificate


@dataclass(frozen=True)
class ClientCertificateFiles:
    cert: Path
    key: Path

    @property
    def certificate(self) -> ClientCertificate:
        return ClientCertificate(self.cert, self.key)

    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(serialization.Encoding.DER)

    def public_jwk(self) -> dict[str, object]:
        """The certificate's key as a JWK with its x5c.

        What a self_signed_tls_client_auth client registers (RFC 8705 §2.2)."""
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))  # type: ignore[arg-type]
        return {**jwk, "x5c": [base64.b64encode(self.der()).decode("ascii")]}


def issue_client_certificate(ca: trustme.CA, directory: Path, dns_name: str) -> ClientCertificateFiles:
    """A client certificate from `ca` naming `dns_name` (tls_client_auth_san_dns)."""
    issued = ca.issue_cert(dns_name)
    files = ClientCertificateFiles(directory / f"{dns_name}.pem", directory / f"{dns_name}.key")
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    return files


def self_signed_client_certificate(directory: Path, name: str) -> ClientCertificateFiles:
    """A self-signed P-256 client certificate (no CA involved: the OP knows it by its JWK)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    files = ClientCertificateFiles(directory / f"{name}.pem", directory / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files
