"""--admin_token_file on a live data plane, with the official client.

Admin calls (HandleReloadConfigRequest, modelplane.DataPlaneInfo) need the token; what TF
Serving leaves open to every client (prediction, metadata, GetModelStatus, health) stays open.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from dataplane.admin_auth import DENIED, OPEN_WARNING
from modelplane import info_pb2, info_pb2_grpc
from tests.e2e.test_serving_ops import predict_request
from tests.support import processes
from tests.support.processes import REPO_ROOT, DataPlaneProcess

TOKEN = "e2e-admin-token-7f3a9c"
RIGHT = (("authorization", f"Bearer {TOKEN}"),)
WRONG = (("authorization", f"Bearer {TOKEN}x"),)
MISSING: tuple[tuple[str, str], ...] = ()
AVAILABLE = 30
ONE = np.array([[1.0]], np.float32)


@pytest.fixture(scope="module")
def closed_plane(
    saved_models: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DataPlaneProcess]:
    """One data plane serving half_plus_two with an admin token, shared by the module."""
    root = tmp_path_factory.mktemp("admin")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    plane = processes.start_dataplane(
        f"--model_base_path={saved_models.half_plus_two}",  # type: ignore[attr-defined]
        "--model_name=hp2",
        f"--admin_token_file={token_file}",
        log_dir=root,
    )
    yield plane
    plane.stop()


def reload_request(saved_models: object, *names: str) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    entries = " ".join(
        f'config {{ name: "{name}" base_path: "{saved_models.half_plus_two}" '  # type: ignore[attr-defined]
        'model_platform: "tensorflow" }'
        for name in names
    )
    text_format.Parse(f"model_config_list {{ {entries} }}", request.config)
    return request


def status_of(channel: grpc.Channel, name: str) -> dict[int, int]:
    """version -> state; {} when the model is unknown (open: no token needed)."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    try:
        response = stub.GetModelStatus(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.NOT_FOUND
        return {}
    return {s.version: s.state for s in response.model_version_status}


def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


@pytest.mark.parametrize("metadata", [MISSING, WRONG], ids=["no-token", "wrong-token"])
def test_a_reload_without_the_right_token_is_unauthenticated_and_changes_nothing(
    closed_plane: DataPlaneProcess, saved_models: object, metadata
) -> None:
    with grpc.insecure_channel(closed_plane.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = reload_request(saved_models, "intruder")  # would also unload hp2
        code, details = refused(
            lambda: stub.HandleReloadConfigRequest(request, metadata=metadata, timeout=30)
        )
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, DENIED)
        assert status_of(channel, "hp2") == {123: AVAILABLE}
        assert status_of(channel, "intruder") == {}


@pytest.mark.parametrize("metadata", [MISSING, WRONG], ids=["no-token", "wrong-token"])
def test_the_info_service_needs_the_token(closed_plane: DataPlaneProcess, metadata) -> None:
    with grpc.insecure_channel(closed_plane.grpc_target) as channel:
        stub = info_pb2_grpc.DataPlaneInfoStub(channel)
        code, details = refused(
            lambda: stub.GetInfo(info_pb2.GetInfoRequest(), metadata=metadata, timeout=30)
        )
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, DENIED)
        info = stub.GetInfo(info_pb2.GetInfoRequest(), metadata=RIGHT, timeout=30)
        assert len(info.incarnation_id) == 32 and len(info.config_fingerprint) == 64


def test_with_the_right_token_a_reload_applies(
    closed_plane: DataPlaneProcess, saved_models: object
) -> None:
    with grpc.insecure_channel(closed_plane.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = reload_request(saved_models, "hp2", "second")
        response = stub.HandleReloadConfigRequest(request, metadata=RIGHT, timeout=60)
        assert response.status.error_code == 0, response.status.error_message
        assert status_of(channel, "second") == {123: AVAILABLE}
        undo = reload_request(saved_models, "hp2")
        stub.HandleReloadConfigRequest(undo, metadata=RIGHT, timeout=60)


def test_prediction_metadata_status_and_health_need_no_token(
    closed_plane: DataPlaneProcess,
) -> None:
    with grpc.insecure_channel(closed_plane.grpc_target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = prediction.Predict(predict_request("hp2", ONE), timeout=30)
        assert list(response.outputs["y"].float_val) == [2.5]
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "hp2"
        assert prediction.GetModelMetadata(metadata, timeout=30).model_spec.version.value == 123
        assert status_of(channel, "hp2") == {123: AVAILABLE}
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    assert OPEN_WARNING not in closed_plane.log_path.read_text()


def test_without_the_flag_admin_calls_are_open_and_one_warning_says_so(
    start_dataplane: Callable[..., DataPlaneProcess], saved_models: object
) -> None:
    plane = start_dataplane(f"--model_base_path={saved_models.half_plus_two}", "--model_name=hp2")  # type: ignore[attr-defined]
    with grpc.insecure_channel(plane.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = reload_request(saved_models, "hp2", "other")
        response = stub.HandleReloadConfigRequest(request, timeout=60)
        assert response.status.error_code == 0, response.status.error_message
        assert status_of(channel, "other") == {123: AVAILABLE}
    log = plane.log_path.read_text()
    assert log.count(OPEN_WARNING) == 1
    assert f"WARNING dataplane.server: {OPEN_WARNING}" in log


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file or directory"), ("  \n", "is empty")],
    ids=["missing", "empty"],
)
def test_an_unusable_token_file_stops_the_start(
    tmp_path: Path, content: str | None, message: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "dataplane", "--port=0", f"--admin_token_file={token_file}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Failed to start server. Error: INVALID_ARGUMENT: ")
    assert message in last and str(token_file) in last
