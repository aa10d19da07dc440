"""TLS for both ports from TensorFlow Serving's `--ssl_config_file` (an `SSLConfig` text proto).

As in TF Serving, the file holds the server's key and certificate as PEM text, optionally a
custom CA, and `client_verify`: with it, clients must present a certificate signed by that CA
(mutual TLS); without it, client certificates are not asked for. The gRPC transports take the
config as a plain tuple; the REST port (beyond TF Serving) takes an `ssl.SSLContext` built from
the same file. Both are built once at startup, where any defect is one clear line.
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from dataplane.transport import TlsTuple
from modelplane import ssl_config_pb2


class TlsConfigError(Exception):
    """--ssl_config_file cannot be used; the message is the one line the operator sees."""


@dataclass(frozen=True)
class TlsConfig:
    """The server's key and certificate (PEM), the CA for client certificates, and whether a
    client must present one."""

    server_key: bytes
    server_cert: bytes
    custom_ca: bytes = b""
    client_verify: bool = False

    def transport_tuple(self) -> TlsTuple:
        return (self.server_key, self.server_cert, self.custom_ca, self.client_verify)

    def ssl_context(self) -> ssl.SSLContext:
        """A server context for the REST port: TLS 1.2 or later, the client's certificate
        required and checked against custom_ca when client_verify."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_key_pair(context, self.server_key, self.server_cert)
        if self.client_verify:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.custom_ca.decode("ascii"))
        return context


def read_ssl_config(path: str) -> TlsConfig:
    """Parse and check an SSLConfig text proto; every defect raises TlsConfigError."""
    where = f"--ssl_config_file {path}"
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsConfigError(f"{where}: cannot read it: {exc}") from None
    try:
        proto = text_format.Parse(text, ssl_config_pb2.SSLConfig())
    except text_format.ParseError as exc:
        raise TlsConfigError(f"{where}: not an SSLConfig text proto: {exc}") from None
    if not proto.server_key or not proto.server_cert:
        raise TlsConfigError(f"{where}: server_key and server_cert are both required")
    if proto.client_verify and not proto.custom_ca:
        raise TlsConfigError(f"{where}: client_verify needs custom_ca to verify clients against")
    config = TlsConfig(
        proto.server_key.encode(),
        proto.server_cert.encode(),
        proto.custom_ca.encode(),
        proto.client_verify,
    )
    try:
        config.ssl_context()  # the PEM parses and the key matches the certificate
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(f"{where}: unusable key, certificate or CA: {exc}") from None
    return config


def _load_key_pair(context: ssl.SSLContext, key: bytes, cert: bytes) -> None:
    """`ssl` loads a key pair only from files: write them to a private directory that is gone
    once they are loaded."""
    with tempfile.TemporaryDirectory(prefix="tls-") as private:
        key_path, cert_path = Path(private, "key.pem"), Path(private, "cert.pem")
        key_path.write_bytes(key)
        cert_path.write_bytes(cert)
        context.load_cert_chain(cert_path, key_path)
