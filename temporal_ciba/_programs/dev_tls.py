"""A local certificate authority and a server certificate, for the demo and docker-compose.

oidc-provider sends pings only to an https notification endpoint, so even a laptop demo needs
a certificate. This makes one that only this installation trusts (the OP is told through
NODE_EXTRA_CA_CERTS, Python clients through SSL_CERT_FILE). Not for production.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class DevCertificates:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# Certificates are made again when they expire within this many days; docker-compose runs
# `dev-certs` on every start, so a system restarted now and then never serves an expired one.
RENEW_WITHIN_DAYS = 30


def _still_good(files: DevCertificates, hosts: list[str], now: datetime.datetime) -> bool:
    """The files exist, the certificate is for these hosts and not within RENEW_WITHIN_DAYS of expiry."""
    if not (files.ca.exists() and files.cert.exists() and files.key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    if cert.not_valid_after_utc - now <= datetime.timedelta(days=RENEW_WITHIN_DAYS):
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    covered = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    covered |= set(names.get_values_for_type(x509.DNSName))
    return {str(ipaddress.ip_address(h)) if _is_ip(h) else h for h in hosts} <= covered


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def make_dev_certificates(directory: Path, hosts: list[str], *, days: int = 365) -> DevCertificates:
    """Write ca.pem, cert.pem (the server certificate for `hosts`) and key.pem.

    Existing files are reused while they cover `hosts` and are more than RENEW_WITHIN_DAYS from
    expiry; otherwise new ones are made."""
    files = DevCertificates(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    now = datetime.datetime.now(datetime.UTC)
    if _still_good(files, hosts, now):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("temporal-ciba local CA"))
        .issuer_name(_name("temporal-ciba local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files.key.write_bytes(_pem(key))
    files.key.chmod(0o600)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files
