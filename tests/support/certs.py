"""Certificates made by the tests themselves: a CA, a server certificate for localhost and
127.0.0.1, and client certificates (one from the CA, one from a CA nobody trusts)."""

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
class KeyPair:
    key_pem: bytes
    cert_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """(cert path, key path), as `requests` takes a client certificate."""
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    server: KeyPair
    client: KeyPair  # signed by `ca`
    stranger: KeyPair  # a client signed by another CA

    def ssl_config(self, client_verify: bool) -> str:
        """An SSLConfig text proto as TF Serving reads it (PEM inline)."""
        lines = [
            f"server_key: {_quoted(self.server.key_pem)}",
            f"server_cert: {_quoted(self.server.cert_pem)}",
            f"custom_ca: {_quoted(self.ca.cert_pem)}",
            f"client_verify: {'true' if client_verify else 'false'}",
        ]
        return "\n".join(lines) + "\n"


def make_pki() -> Pki:
    ca = _issue("test CA", None, is_ca=True)
    other_ca = _issue("untrusted CA", None, is_ca=True)
    server = _issue("localhost", ca, server=True)
    return Pki(ca, server, _issue("client", ca), _issue("stranger", other_ca))


def _quoted(pem: bytes) -> str:
    return '"' + pem.decode().replace("\n", "\\n") + '"'


def _issue(name: str, issuer: KeyPair | None, is_ca: bool = False, server: bool = False) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if issuer is None:
        signing_key, issuer_name = key, subject
    else:
        signing_key = serialization.load_pem_private_key(issuer.key_pem, None)
        issuer_name = x509.load_pem_x509_certificate(issuer.cert_pem).subject
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if issuer is not None:
        authority = serialization.load_pem_private_key(issuer.key_pem, None).public_key()
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority), critical=False
        )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    cert = builder.sign(signing_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyPair(key_pem, cert.public_bytes(serialization.Encoding.PEM))
