"""--model_base_path_prefixes on a live data plane: at start (flag and file), by reload and
by a polled config file, a base path outside the prefixes (after `..` and symlinks) is refused
and nothing changes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import model_service_pb2_grpc

from tests.e2e.test_admin_auth import AVAILABLE, status_of
from tests.e2e.test_reload_queue import reload_request
from tests.support.processes import REPO_ROOT, DataPlaneProcess


@pytest.fixture
def layout(saved_models: object, tmp_path: Path) -> dict[str, Path]:
    """`models` (the allowed prefix) with half_plus_two and a link out, `outside` with a copy."""
    models, outside = tmp_path / "models", tmp_path / "outside"
    shutil.copytree(saved_models.half_plus_two, models / "hp2")  # type: ignore[attr-defined]
    shutil.copytree(saved_models.half_plus_two, outside / "hp2")  # type: ignore[attr-defined]
    (models / "link").symlink_to(outside / "hp2")
    return {"models": models, "outside": outside}


def refusal(models: Path) -> str:
    return f"outside the allowed prefixes {models} (--model_base_path_prefixes)"


@pytest.mark.parametrize("how", ["flag", "file"])
def test_a_start_naming_a_path_outside_the_prefixes_fails(
    layout: dict[str, Path], tmp_path: Path, how: str
) -> None:
    models, escape = layout["models"], f"{layout['models']}/../outside/hp2"
    if how == "flag":
        source = f"--model_base_path={escape}"
    else:
        config = tmp_path / "models.config"
        config.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{escape}" }} }}')
        source = f"--model_config_file={config}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataplane",
            "--port=0",
            source,
            f"--model_base_path_prefixes={models}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255
    assert "Failed to start server. Error: INVALID_ARGUMENT: " in result.stderr
    assert f"has base_path {escape} (resolved: {layout['outside'] / 'hp2'})" in result.stderr
    assert refusal(models) in result.stderr


def test_reloads_outside_the_prefixes_are_refused_and_change_nothing(
    layout: dict[str, Path], start_dataplane: Callable[..., DataPlaneProcess]
) -> None:
    models = layout["models"]
    plane = start_dataplane(
        f"--model_base_path={models / 'hp2'}",
        "--model_name=hp2",
        f"--model_base_path_prefixes={models}",
    )
    with grpc.insecure_channel(plane.grpc_target) as channel:
        reload = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest
        for escape in (f"{models}/../outside/hp2", f"{models}/link", "/etc"):
            with pytest.raises(grpc.RpcError) as refused:  # the call's status, as TF Serving
                reload(reload_request({"hp2": models / "hp2", "x": escape}), timeout=60)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert f"Model x has base_path {escape} (resolved: " in refused.value.details()
            assert refusal(models) in refused.value.details()
            assert status_of(channel, "hp2") == {123: AVAILABLE}
            assert status_of(channel, "x") == {}
        inside = reload(
            reload_request({"hp2": models / "hp2", "x": f"{models}/hp2/../hp2"}), timeout=60
        )
        assert inside.status.error_code == 0, inside.status.error_message
        assert status_of(channel, "x") == {123: AVAILABLE}


def test_a_polled_config_file_naming_a_path_outside_keeps_the_running_config(
    layout: dict[str, Path], start_dataplane: Callable[..., DataPlaneProcess], tmp_path: Path
) -> None:
    models = layout["models"]
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "hp2" base_path: "{models}/hp2" }} }}')
    plane = start_dataplane(
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        f"--model_base_path_prefixes={models}",
    )
    config.write_text(f'model_config_list {{ config {{ name: "x" base_path: "{models}/link" }} }}')
    deadline = time.monotonic() + 60
    while "Keeping the running config" not in plane.log_path.read_text():
        assert time.monotonic() < deadline, "the poll never reported the refused file"
        time.sleep(0.2)
    assert refusal(models) in plane.log_path.read_text()
    with grpc.insecure_channel(plane.grpc_target) as channel:
        assert status_of(channel, "hp2") == {123: AVAILABLE}
        assert status_of(channel, "x") == {}
