"""The local CA and certificate (demo, docker-compose).

Reused while good, made again when they near expiry or no longer cover the hosts, since
docker-compose runs `dev-certs` on every start."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

from cryptography import x509

from temporal_ciba._programs.dev_tls import RENEW_WITHIN_DAYS, make_dev_certificates

HOSTS = ["callback", "op", "127.0.0.1"]


def expiry(path: Path) -> datetime.datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def test_reused_while_good(tmp_path: Path) -> None:
    first = make_dev_certificates(tmp_path, HOSTS)
    cert = first.cert.read_bytes()
    assert make_dev_certificates(tmp_path, HOSTS).cert.read_bytes() == cert
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600


def test_renewed_within_the_renewal_window(tmp_path: Path) -> None:
    old = make_dev_certificates(tmp_path, HOSTS, days=RENEW_WITHIN_DAYS - 1)
    old_ca = old.ca.read_bytes()
    renewed = make_dev_certificates(tmp_path, HOSTS)
    left = expiry(renewed.cert) - datetime.datetime.now(datetime.UTC)
    assert left > datetime.timedelta(days=300)
    assert renewed.ca.read_bytes() != old_ca  # a new CA too: its own expiry is the same
    assert stat.S_IMODE(renewed.key.stat().st_mode) == 0o600


def test_renewed_for_a_host_it_does_not_cover(tmp_path: Path) -> None:
    cert = make_dev_certificates(tmp_path, HOSTS).cert.read_bytes()
    renewed = make_dev_certificates(tmp_path, [*HOSTS, "payment-api"])
    assert renewed.cert.read_bytes() != cert
