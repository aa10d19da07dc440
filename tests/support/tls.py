"""A throwaway certificate authority for TLS tests, made with Debian's `openssl` command.

One CA signs a server certificate (for `localhost` and 127.0.0.1) and a client certificate;
everything is PEM in one directory, as an operator would hand files to the processes.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()


def make_pki(directory: Path) -> Pki:
    """ca.pem/ca.key, server.pem/server.key, client.pem/client.key under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=modelplane test CA")  # fmt: skip
    _signed(directory, "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    _signed(directory, "client", "/CN=controlplane", "extendedKeyUsage=clientAuth")
    return Pki(directory)


def _signed(directory: Path, name: str, subject: str, extension: str) -> None:
    _openssl(directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)  # fmt: skip
    (directory / f"{name}.ext").write_text(extension + "\n")
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             "-extfile", f"{name}.ext")  # fmt: skip


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
