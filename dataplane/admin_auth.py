"""Who may make admin calls: the decision, apart from any protocol.

An admin call changes what the server serves (ModelService.HandleReloadConfigRequest) or
tells what it serves and since when (every modelplane.* method). TensorFlow Serving leaves
them open to whoever reaches the gRPC port; with `--admin_token_file` they need the request
metadata `authorization: Bearer <token>`, or a client certificate the transport verified.
Prediction, metadata, GetModelStatus and health stay open either way, as in TF Serving.

The token is compared in constant time (`hmac.compare_digest`), so the time a wrong guess
takes says nothing about how much of it was right. docs/security.md has the threat model.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

AUTHORIZATION = "authorization"  # gRPC metadata keys arrive lower-case
_SCHEME = "bearer"  # RFC 6750; the scheme name is case-insensitive (RFC 7235)

DENIED = (
    "admin calls need the metadata 'authorization: Bearer <token>' with the token of "
    "--admin_token_file"
)
OPEN_WARNING = (
    "Admin calls (HandleReloadConfigRequest, modelplane.*) are open to anyone who can reach "
    "the gRPC port: set --admin_token_file to require a token"
)


class AdminTokenError(Exception):
    """--admin_token_file cannot be used (unreadable, empty); the server must not start."""


@dataclass(frozen=True, slots=True)
class AdminAuth:
    """The admin credential in force; `token` None leaves admin calls open."""

    token: bytes | None = None

    @property
    def open(self) -> bool:
        return self.token is None

    def allows(self, metadata: Iterable[tuple[str, str]], client_verified: bool) -> bool:
        """Whether a call with this metadata may run an admin method."""
        if self.token is None or client_verified:
            return True
        return any(key == AUTHORIZATION and self._matches(value) for key, value in metadata)

    def _matches(self, value: str) -> bool:
        scheme, _, credential = value.strip().partition(" ")
        if scheme.lower() != _SCHEME:
            return False
        assert self.token is not None
        return hmac.compare_digest(credential.strip().encode(), self.token)


OPEN = AdminAuth()  # TF Serving's behaviour: admin calls need nothing


def read_admin_auth(path: str) -> AdminAuth:
    """The credential `--admin_token_file` names (its content, surrounding space stripped);
    an empty path leaves admin calls open."""
    if not path:
        return OPEN
    try:
        with open(path, "rb") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise AdminTokenError(f"cannot read --admin_token_file {path}: {exc.strerror}") from None
    if not token:
        raise AdminTokenError(f"--admin_token_file {path} is empty")
    if not token.isascii() or any(byte < 0x21 or byte == 0x7F for byte in token):
        raise AdminTokenError(
            f"--admin_token_file {path}: the token must be printable ASCII without spaces "
            "(it travels in a gRPC metadata value)"
        )
    return AdminAuth(token)
