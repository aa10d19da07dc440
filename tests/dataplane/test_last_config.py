"""--last_config_file: a restarted data plane serves what its last reload applied before its
ports open (a real data plane, reloaded with the official ModelService client)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from dataplane import last_config
from dataplane.config import ModelServerConfig, parse_config_text
from tests.support.processes import start_dataplane

CONFIG = 'model_config_list {{ config {{ name: "half_plus_two" base_path: "{path}" }} }}'


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    config = parse_config_text(CONFIG.format(path="/models/half_plus_two"), "test")
    path = str(tmp_path / "last.config")
    assert last_config.load(path) is None  # nothing saved yet: start empty
    last_config.save(path, config)
    assert last_config.load(path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["last.config"]  # no temporary left


def test_an_unusable_file_means_an_empty_start(tmp_path: Path, caplog) -> None:
    path = tmp_path / "last.config"
    path.write_text("model_config_list { config { name: ")
    with caplog.at_level(logging.WARNING):
        assert last_config.load(str(path)) is None
    assert "not used, starting empty" in caplog.text


def test_a_failed_save_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    missing_dir = tmp_path / "gone" / "last.config"
    with caplog.at_level(logging.WARNING):
        last_config.save(str(missing_dir), ModelServerConfig())
    assert f"cannot write --last_config_file {missing_dir}" in caplog.text


def rest_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
        return json.loads(response.read())


def test_a_restarted_plane_serves_its_last_reload_as_soon_as_its_ports_open(
    saved_models, tmp_path: Path
) -> None:
    path = tmp_path / "last.config"
    flag = f"--last_config_file={path}"
    first = start_dataplane(flag, log_dir=tmp_path)
    try:
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(
            parse_config_text(CONFIG.format(path=saved_models.half_plus_two), "t")
        )
        with grpc.insecure_channel(first.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            assert stub.HandleReloadConfigRequest(request, timeout=60).status.error_code == 0
    finally:
        first.stop()
    assert last_config.load(str(path)) == request.config
    second = start_dataplane(flag, log_dir=tmp_path)
    try:  # the very first request, with no reload since the start
        status = rest_json(f"{second.rest_url}/v1/models/half_plus_two")
        assert [v["state"] for v in status["model_version_status"]] == ["AVAILABLE"]
        body = {"instances": [1.0, 2.0, 5.0]}
        answer = rest_json(f"{second.rest_url}/v1/models/half_plus_two:predict", body)
        assert answer == {"predictions": [2.5, 3.0, 4.5]}
    finally:
        second.stop()


def test_a_plane_without_the_flag_still_starts_empty(tmp_path: Path) -> None:
    plane = start_dataplane(log_dir=tmp_path)
    try:
        with urllib.request.urlopen(f"{plane.rest_url}/v1/models/half_plus_two", timeout=10):
            raise AssertionError("an empty plane knows no model")
    except urllib.error.HTTPError as err:
        assert err.code == 404
    finally:
        plane.stop()
