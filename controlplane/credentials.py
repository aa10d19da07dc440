"""How the control plane proves itself to data planes and reaches them: token and TLS.

Data planes started with `--admin_token_file` want `authorization: Bearer <token>` on their
admin calls (ModelService.HandleReloadConfigRequest, modelplane.*), and TLS when they have
`--ssl_config_file`. One token per fleet, from MODELPLANE_DATAPLANE_TOKEN or the file
MODELPLANE_DATAPLANE_TOKEN_FILE; TLS from a CA and optionally a client certificate and key.
The files are read once at startup, so a wrong path stops the start with one line instead of
failing every push later (docs/security.md). No TensorFlow here: the CLI checks this cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from .config import DataPlaneAuth

# Reconnect quickly after a data plane restarts on the same port (gRPC's default backoff grows
# to two minutes, which alone would blow the 30 s re-sync goal).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A plane's client replaces its channel after a timed-out call (client.py); with gRPC's
    # process-wide subchannel pool the new channel would get the same dead connection back.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class CredentialsError(Exception):
    """A token or TLS file the environment names cannot be used; one line for stderr."""


@dataclass(frozen=True)
class PlaneCredentials:
    """What every call to every data plane carries: a bearer token and/or TLS material."""

    token: str = ""
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str = ""
    tls: bool = False

    @classmethod
    def load(cls, auth: DataPlaneAuth) -> PlaneCredentials:
        """Read the files `auth` names; raises CredentialsError with the variable to fix."""
        if auth.token and auth.token_file:
            raise CredentialsError(
                "set MODELPLANE_DATAPLANE_TOKEN or MODELPLANE_DATAPLANE_TOKEN_FILE, not both"
            )
        token = auth.token.strip()
        if auth.token_file:
            token = _read("MODELPLANE_DATAPLANE_TOKEN_FILE", auth.token_file).decode().strip()
            if not token:
                raise CredentialsError(
                    f"MODELPLANE_DATAPLANE_TOKEN_FILE {auth.token_file} is empty"
                )
        if bool(auth.cert_file) != bool(auth.key_file):
            raise CredentialsError(
                "MODELPLANE_DATAPLANE_CERT_FILE and MODELPLANE_DATAPLANE_KEY_FILE go together"
            )
        tls = bool(auth.ca_file or auth.cert_file)
        return cls(
            token=token,
            root_certificates=_read_optional("MODELPLANE_DATAPLANE_CA_FILE", auth.ca_file),
            certificate_chain=_read_optional("MODELPLANE_DATAPLANE_CERT_FILE", auth.cert_file),
            private_key=_read_optional("MODELPLANE_DATAPLANE_KEY_FILE", auth.key_file),
            server_name=auth.server_name,
            tls=tls,
        )

    def channel(self, address: str) -> grpc.Channel:
        """A TLS channel when a CA or client certificate is configured, else plain TCP."""
        if not self.tls:
            return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        options = list(CHANNEL_OPTIONS)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        credentials = grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )
        return grpc.secure_channel(address, credentials, options=options)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CredentialsError(f"{variable}: cannot read {path}: {err.strerror}") from err


def _read_optional(variable: str, path: str) -> bytes | None:
    return _read(variable, path) if path else None
