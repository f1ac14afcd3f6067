"""A throwaway test CA and a server certificate for 127.0.0.1 / localhost.

Everything is generated with ``cryptography`` (no ``openssl`` binary needed)
and written as PEM files into a directory the caller gives::

    files = make_test_ca(tmp_path)
    files.ca_cert       # ca.pem      - trust this in clients (aiohttp, curl --cacert, nginx proxy_ssl_trusted_certificate, ...)
    files.server_cert   # server.pem  - leaf certificate (SAN: DNS localhost, IP 127.0.0.1, IP ::1)
    files.server_key    # server.key  - its unencrypted PKCS#8 private key
    files.server_chain  # server-chain.pem - leaf followed by the CA (for servers that want a chain)
    server_ssl_context(files)  # ssl.SSLContext for an HTTPS test server
    client_ssl_context(files)  # ssl.SSLContext that trusts only the test CA

The certificates pass Python's strict X.509 checks (``VERIFY_X509_STRICT``,
the default from Python 3.13): the CA has critical basicConstraints and
keyUsage, the leaf has authority/subject key identifiers, serverAuth EKU and a
critical-free SAN.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME = "chatkit-gateway test CA"
SERVER_COMMON_NAME = "localhost"
DEFAULT_DNS_NAMES = ("localhost",)
DEFAULT_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a generated test CA and server certificate."""

    directory: Path
    ca_cert: Path  # ca.pem
    ca_key: Path  # ca.key (to sign more certificates, e.g. client certs)
    server_cert: Path  # server.pem (leaf only)
    server_key: Path  # server.key
    server_chain: Path  # server-chain.pem (leaf + CA)

    def server_ssl_context(self) -> ssl.SSLContext:
        return server_ssl_context(self)

    def client_ssl_context(self) -> ssl.SSLContext:
        return client_ssl_context(self)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_test_ca(
    directory: str | Path,
    *,
    dns_names: tuple[str, ...] = DEFAULT_DNS_NAMES,
    ips: tuple[str, ...] = DEFAULT_IPS,
    days: int = 30,
) -> TLSFiles:
    """Generate a CA and a server certificate signed by it into ``directory``.

    Keys are ECDSA P-256 (fast to generate; accepted by OpenSSL, aiohttp,
    nginx, curl, wrk and Chromium).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    not_before = now - _dt.timedelta(hours=1)
    not_after = now + _dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chatkit-gateway tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_COMMON_NAME)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TLSFiles(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        server_chain=directory / "server-chain.pem",
    )
    files.ca_cert.write_bytes(_cert_pem(ca_cert))
    files.ca_key.write_bytes(_key_pem(ca_key))
    files.ca_key.chmod(0o600)
    files.server_cert.write_bytes(_cert_pem(server_cert))
    files.server_key.write_bytes(_key_pem(server_key))
    files.server_key.chmod(0o600)
    files.server_chain.write_bytes(_cert_pem(server_cert) + _cert_pem(ca_cert))
    return files


def server_ssl_context(files: TLSFiles) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for an HTTPS test server presenting the test cert."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.server_chain, files.server_key)
    return ctx


def client_ssl_context(files: TLSFiles) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for clients that trusts the test CA (and only it)."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca_cert))
