"""--ssl_config_file: TF Serving's SSLConfig read into the transports' tuple and the REST port's
SSLContext; a defect is one clear line at startup."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from dataplane.transport.tls import TlsConfigError, read_ssl_config
from tests.support.certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ssl.config"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("client_verify", [True, False])
def test_a_tf_serving_ssl_config_reads_into_the_transport_tuple(tmp_path, pki, client_verify):
    config = read_ssl_config(write(tmp_path, pki.ssl_config(client_verify)))
    assert config.transport_tuple() == (
        pki.server.key_pem,
        pki.server.cert_pem,
        pki.ca.cert_pem,
        client_verify,
    )
    context = config.ssl_context()
    assert context.verify_mode is (ssl.CERT_REQUIRED if client_verify else ssl.CERT_NONE)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_without_client_verify_the_ca_may_be_left_out(tmp_path, pki):
    text = "\n".join(pki.ssl_config(False).splitlines()[:2])  # server_key, server_cert only
    config = read_ssl_config(write(tmp_path, text))
    assert (config.custom_ca, config.client_verify) == (b"", False)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("server_key: 'x'\nserver_cert: 'y'\nno_such_field: 1\n", "not an SSLConfig text proto"),
        ("server_cert: 'y'\n", "server_key and server_cert are both required"),
        ("", "server_key and server_cert are both required"),
        ("server_key: 'x'\nserver_cert: 'y'\n", "unusable key, certificate or CA"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path, text, says):
    path = write(tmp_path, text)
    with pytest.raises(TlsConfigError) as caught:
        read_ssl_config(path)
    assert str(caught.value).startswith(f"--ssl_config_file {path}: {says}")
    assert "\n" not in str(caught.value)


def test_client_verify_needs_a_ca(tmp_path, pki):
    text = "\n".join(pki.ssl_config(False).splitlines()[:2]) + "\nclient_verify: true\n"
    with pytest.raises(TlsConfigError, match="client_verify needs custom_ca"):
        read_ssl_config(write(tmp_path, text))


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path, pki):
    text = pki.ssl_config(False).replace(
        pki.server.key_pem.decode().replace("\n", "\\n"),
        pki.client.key_pem.decode().replace("\n", "\\n"),
    )
    with pytest.raises(TlsConfigError, match="unusable key, certificate or CA"):
        read_ssl_config(write(tmp_path, text))


def test_a_missing_file_is_named(tmp_path):
    path = str(tmp_path / "nowhere.config")
    with pytest.raises(TlsConfigError, match=f"--ssl_config_file {path}: cannot read it"):
        read_ssl_config(path)
