"""`python -m dataplane` on each gRPC transport, and with `--ssl_config_file` (TLS and mutual
TLS on gRPC, HTTPS on REST), against the official tensorflow-serving-api client and `requests`.

The certificates are made by the test (tests/support/certs.py). half_plus_two computes
y = 0.5x + 2. With TLS the default transport is the native one if it was built with TLS, else
grpcio (with a warning): the transport that is present is the one tested.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from dataplane import tensors
from dataplane.transport import TRANSPORTS
from tests.support.certs import Pki, make_pki
from tests.support.processes import REPO_ROOT, DataPlaneProcess, start_dataplane

ROWS = np.array([[1.0], [2.0], [5.0]], np.float32)
EXPECTED = [[2.5], [3.0], [4.5]]


def predict(channel: grpc.Channel) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensors.fill_tensor_proto(request.inputs["x"], ROWS, as_tensor_content=True)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return tensors.to_ndarray(stub.Predict(request, timeout=30).outputs["y"])


def serve(saved_models, log_dir: Path, *flags: str) -> DataPlaneProcess:
    return start_dataplane(
        "--model_name=half_plus_two",
        f"--model_base_path={saved_models.half_plus_two}",
        *flags,
        log_dir=log_dir,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_transport_serves_a_real_model_to_the_official_client(
    saved_models, tmp_path, transport
) -> None:
    plane = serve(saved_models, tmp_path, f"--grpc_transport={transport}")
    try:
        with grpc.insecure_channel(plane.grpc_target) as channel:
            np.testing.assert_allclose(predict(channel), EXPECTED)
            raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            with pytest.raises(grpc.RpcError) as garbage:
                raw(b"\xff\xff\xff\xff", timeout=30)
            assert garbage.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert garbage.value.details() == (
                "cannot parse the request as tensorflow.serving.PredictRequest"
            )
            np.testing.assert_allclose(predict(channel), EXPECTED)
    finally:
        plane.stop()
    log = plane.log_path.read_text()
    assert ("serving gRPC with grpcio" in log) is False  # chosen, never fallen back to


@pytest.mark.parametrize("rest_transport", ["python", "native"])
def test_each_rest_transport_serves_the_rest_api(saved_models, tmp_path, rest_transport) -> None:
    plane = serve(saved_models, tmp_path, f"--rest_transport={rest_transport}")
    api = f"{plane.rest_url}/v1/models/half_plus_two"
    try:
        with requests.Session() as session:
            answer = session.post(f"{api}:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
            assert (answer.status_code, answer.json()) == (200, {"predictions": [2.5, 3.0, 4.5]})
            status = session.get(api, timeout=30).json()
            assert status["model_version_status"][0]["state"] == "AVAILABLE"
            bad = session.post(f"{api}:predict", data=b"{", timeout=30)
            assert bad.status_code == 400
            assert bad.json()["error"].startswith("JSON Parse error")
            missing = session.post(f"{plane.rest_url}/v1/models/nope:predict", json={}, timeout=30)
            assert (missing.status_code, missing.json()) == (
                404,
                {"error": "Servable not found for request: Latest(nope)"},
            )
    finally:
        plane.stop()
    fell_back = "serving REST with the Python server" in plane.log_path.read_text()
    assert fell_back is False


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> tuple[Pki, Path]:
    """The certificates, and a directory holding the CA's and the client's as files."""
    made = make_pki()
    directory = tmp_path_factory.mktemp("pki")
    (directory / "ca.crt").write_bytes(made.ca.cert_pem)
    made.client.write(directory, "client")
    made.stranger.write(directory, "stranger")
    return made, directory


def tls_plane(saved_models, pki, tmp_path_factory, client_verify: bool) -> DataPlaneProcess:
    made, directory = pki
    config = directory / f"ssl-{client_verify}.config"
    config.write_text(made.ssl_config(client_verify))
    log_dir = tmp_path_factory.mktemp("tls")
    return serve(saved_models, log_dir, f"--ssl_config_file={config}")


@pytest.fixture(scope="module")
def one_way(saved_models, pki, tmp_path_factory) -> Iterator[DataPlaneProcess]:
    plane = tls_plane(saved_models, pki, tmp_path_factory, client_verify=False)
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def mutual(saved_models, pki, tmp_path_factory) -> Iterator[DataPlaneProcess]:
    plane = tls_plane(saved_models, pki, tmp_path_factory, client_verify=True)
    yield plane
    plane.stop()


def secure_channel(plane: DataPlaneProcess, pki, client: str | None = None) -> grpc.Channel:
    made, _ = pki
    pair = {"client": made.client, "stranger": made.stranger}.get(client or "")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=made.ca.cert_pem,
        private_key=pair.key_pem if pair else None,
        certificate_chain=pair.cert_pem if pair else None,
    )
    return grpc.secure_channel(f"localhost:{plane.grpc_port}", credentials)


def https(plane: DataPlaneProcess) -> str:
    return f"https://localhost:{plane.rest_port}/v1/models/half_plus_two:predict"


def rest_predict(plane: DataPlaneProcess, pki, cert: str | None = None) -> requests.Response:
    _, directory = pki
    client = (str(directory / f"{cert}.crt"), str(directory / f"{cert}.key")) if cert else None
    body = {"instances": [1.0, 2.0, 5.0]}
    return requests.post(
        https(plane), json=body, verify=directory / "ca.crt", cert=client, timeout=30
    )


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        predict(channel)
    return caught.value.code()


def test_one_way_tls_serves_grpc_to_a_client_that_trusts_the_ca(one_way, pki) -> None:
    with secure_channel(one_way, pki) as channel:
        np.testing.assert_allclose(predict(channel), EXPECTED)


def test_one_way_tls_refuses_a_plaintext_client(one_way) -> None:
    with grpc.insecure_channel(one_way.grpc_target) as channel:
        assert refused(channel) is grpc.StatusCode.UNAVAILABLE


def test_one_way_tls_serves_https_on_the_rest_port(one_way, pki) -> None:
    response = rest_predict(one_way, pki)
    assert response.status_code == 200
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{one_way.rest_port}/v1/models/half_plus_two", timeout=10)


def test_mutual_tls_accepts_a_client_certificate_from_the_ca(mutual, pki) -> None:
    with secure_channel(mutual, pki, client="client") as channel:
        np.testing.assert_allclose(predict(channel), EXPECTED)
    response = rest_predict(mutual, pki, cert="client")
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}


@pytest.mark.parametrize("client", [None, "stranger"])
def test_mutual_tls_refuses_a_client_without_a_certificate_from_the_ca(mutual, pki, client) -> None:
    with secure_channel(mutual, pki, client=client) as channel:
        assert refused(channel) is grpc.StatusCode.UNAVAILABLE
    # TLS 1.3 ends the handshake before the server checks: the refusal may come as an alert
    # (SSLError) or as the connection closed at once.
    with pytest.raises(requests.ConnectionError):
        rest_predict(mutual, pki, cert=client)


def test_a_bad_ssl_config_stops_the_start_with_one_line(tmp_path) -> None:
    config = tmp_path / "ssl.config"
    config.write_text('server_key: "not a key"\n')
    result = subprocess.run(
        [sys.executable, "-m", "dataplane", "--port=0", f"--ssl_config_file={config}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255
    expected = (
        f"Failed to start server. Error: INVALID_ARGUMENT: --ssl_config_file {config}: "
        "server_key and server_cert are both required"
    )
    assert result.stderr.strip().splitlines()[-1] == expected
