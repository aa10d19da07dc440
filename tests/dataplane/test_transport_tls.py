"""TLS on the native transport (rustls), end to end with the official client's
grpc.ssl_channel_credentials: one-way TLS, mTLS accepted, mTLS refused."""

from __future__ import annotations

import grpc
import pytest

from dataplane.transport import _native
from tests.dataplane.native_serving import serving
from tests.support.certificates import Authority, Issued

METHOD = "/test.Echo/Say"


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority("modelplane test CA")


@pytest.fixture(scope="module")
def server_cert(ca: Authority) -> Issued:
    return ca.issue("localhost", server=True)


def say_verified(call: _native.Call) -> None:
    call.finish(b"verified" if call.client_verified else b"anonymous")


def call_over_tls(port: int, ca: Authority, client: Issued | None = None) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        return channel.unary_unary(METHOD)(b"hello", timeout=10)


def test_one_way_tls_serves_a_client_that_trusts_the_ca(ca, server_cert) -> None:
    tls = (server_cert.key_pem, server_cert.cert_pem, b"", False)
    with serving(say_verified, tls=tls) as (_, port):
        assert call_over_tls(port, ca) == b"anonymous"


def test_a_plaintext_client_gets_no_answer_from_a_tls_port(server_cert) -> None:
    tls = (server_cert.key_pem, server_cert.cert_pem, b"", False)
    with (
        serving(say_verified, tls=tls) as (_, port),
        grpc.insecure_channel(f"localhost:{port}") as ch,
        pytest.raises(grpc.RpcError) as caught,
    ):
        ch.unary_unary(METHOD)(b"hello", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_accepts_a_client_certificate_signed_by_the_custom_ca(ca, server_cert) -> None:
    tls = (server_cert.key_pem, server_cert.cert_pem, ca.cert_pem, True)
    with serving(say_verified, tls=tls) as (_, port):
        assert call_over_tls(port, ca, ca.issue("client", server=False)) == b"verified"


@pytest.mark.parametrize("client", ["none", "stranger"])
def test_mtls_refuses_clients_without_a_certificate_of_the_custom_ca(
    ca, server_cert, client
) -> None:
    seen: list[bool] = []

    def record(call: _native.Call) -> None:
        seen.append(call.client_verified)
        say_verified(call)

    stranger = Authority("stranger CA").issue("client", server=False)
    tls = (server_cert.key_pem, server_cert.cert_pem, ca.cert_pem, True)
    with serving(record, tls=tls) as (_, port):
        with pytest.raises(grpc.RpcError) as caught:
            call_over_tls(port, ca, stranger if client == "stranger" else None)
        assert call_over_tls(port, ca, ca.issue("client", server=False)) == b"verified"
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert seen == [True]  # only the verified client's call reached Python


def test_bad_tls_material_is_a_clear_error(server_cert) -> None:
    with pytest.raises(ValueError, match="TLS: server_cert: no PEM certificate"):
        _native.Frontend(["127.0.0.1:0"], [], tls=(server_cert.key_pem, b"", b"", False)).start()
    with pytest.raises(ValueError, match="client_verify needs a custom_ca"):
        tls = (server_cert.key_pem, server_cert.cert_pem, b"", True)
        _native.Frontend(["127.0.0.1:0"], [], tls=tls).start()
