"""JSON logs across both planes: a control plane and a data plane started with
MODELPLANE_LOG_FORMAT=json write only JSON lines, the control plane answers with the client's
request id, and a push is logged under one id by both."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ControlPlaneProcess
from tests.support.processes import start_dataplane

pytestmark = pytest.mark.slow
JSON_LOGS = {"MODELPLANE_LOG_FORMAT": "json"}
RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line but the harness's `=== start` lines, parsed (fails on any other line)."""
    lines = path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines if not line.startswith("=== ")]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in parsed)
    return parsed


def test_a_push_is_followed_by_its_request_id_across_both_logs(
    saved_models, tmp_path: Path
) -> None:
    plane = start_dataplane(log_dir=tmp_path, env=JSON_LOGS)
    control = ControlPlaneProcess(f"sqlite:///{tmp_path / 'cp.db'}", [plane.grpc_target], tmp_path)
    control.env.update(JSON_LOGS)
    try:
        control.prepare().start()
        model = {
            "name": "logged",
            "base_path": saved_models.multi_version,
            "model_platform": "tensorflow",
            "model_version_policy": {"specific": {"versions": [1]}},
        }
        headers = {"Authorization": f"Bearer {control.token}", "x-request-id": "client-7"}
        created = requests.post(
            f"{control.url}/api/v1/models", json=model, headers=headers, timeout=60
        )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == "client-7"
        deadline = time.monotonic() + 90
        while (
            requests.post(
                f"{plane.rest_url}/v1/models/logged:predict", json={"instances": [1.0]}, timeout=30
            ).status_code
            != 200
        ):
            assert time.monotonic() < deadline, "the push never reached the data plane"
            time.sleep(0.2)
    finally:
        control.stop()
        plane.stop()
    control_lines = json_lines(control.log_path)
    access = [line for line in control_lines if line["logger"] == "gunicorn.access"]
    assert any(
        line["request_id"] == "client-7"
        and line["method"] == "POST /api/v1/models"
        and line["status"] == "201"
        for line in access
    ), access
    pushes = {
        line["request_id"]: line["message"]
        for line in control_lines
        if line["message"].startswith("push ") and "request_id" in line
    }
    assert pushes, control_lines
    reloads = [line for line in json_lines(plane.log_path) if line.get("method") == RELOAD]
    assert reloads, "the data plane logged nothing under the push's id"
    assert {line["request_id"] for line in reloads} <= pushes.keys()
