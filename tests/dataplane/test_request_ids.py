"""A live data plane with --log_format=json: every stderr line is a JSON object, and request
ids go from the client to the response (REST) and to the log lines (REST and gRPC)."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
import pytest
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from tests.support.processes import DataPlaneProcess

GENERATED = re.compile(r"[0-9a-f]{32}")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def json_lines(plane: DataPlaneProcess) -> list[dict[str, Any]]:
    """The plane's stderr after the harness's own `=== start` line, each line parsed."""
    lines = plane.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if not line.startswith("=== ")]


@pytest.fixture
def plane(start_dataplane, saved_models) -> DataPlaneProcess:
    return start_dataplane(
        "--model_name=half", f"--model_base_path={saved_models.half_plus_two}", "--log_format=json"
    )


def test_rest_echoes_a_well_formed_id_and_replaces_others(plane: DataPlaneProcess) -> None:
    url = f"{plane.rest_url}/v1/models/half:predict"
    kept = requests.post(url, json={"instances": [1.0]}, headers={"x-request-id": "abc-1"})
    assert kept.json() == {"predictions": [2.5]}
    assert kept.headers["x-request-id"] == "abc-1"
    for bad in ("two words", "x" * 129, 'quote"d'):
        replaced = requests.post(url, json={"instances": [1.0]}, headers={"x-request-id": bad})
        assert GENERATED.fullmatch(replaced.headers["x-request-id"]), bad
    missing = requests.get(f"{plane.rest_url}/v1/models/half/versions/9")
    assert missing.status_code == 404
    assert GENERATED.fullmatch(missing.headers["x-request-id"])


def test_grpc_reload_log_lines_carry_the_callers_id(plane: DataPlaneProcess) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    model = request.config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = "other", "/nowhere", "pytorch"
    with grpc.insecure_channel(f"127.0.0.1:{plane.grpc_port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.HandleReloadConfigRequest(
                request,
                metadata=[("x-request-id", "push-42"), ("traceparent", TRACEPARENT)],
                timeout=60,
            )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    plane.stop()
    lines = json_lines(plane)  # raises unless every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert all(line["time"].endswith("Z") for line in lines)
    rejected = [line for line in lines if line["message"].startswith("Rejected model config")]
    assert rejected == [
        {
            "time": rejected[0]["time"],
            "level": "ERROR",
            "logger": "dataplane.manager",
            "message": "Rejected model config: Model other requests unsupported platform pytorch",
            "request_id": "push-42",
            "method": "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        }
    ]
    # lines logged outside of any request carry no id; TensorFlow's C++ lines are records too
    warned = [line for line in lines if line["message"].startswith("Admin calls")]
    assert len(warned) == 1 and "request_id" not in warned[0]
    assert any(line["logger"] == "native" for line in lines)
