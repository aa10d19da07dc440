"""Model lifecycle on live data planes: reloads by RPC and by config file, version directories
appearing and disappearing, a corrupt version isolated, labels, and swaps under load.

Every test copies real SavedModel versions (half_plus_two, ``y = 0.5x + b``) into its own base
path, so the predicted value for x=1.0 says which version answered: b=2 -> 2.5, b=3 -> 3.5.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from dataplane import tensors
from tests.support.processes import DataPlaneProcess

AVAILABLE, END = 30, 50
Y_BY_VERSION_SOURCE = {1: 2.5, 2: 3.5}  # multi_version: version 1 has b=2, version 2 has b=3
FAST_FLAGS = ("--file_system_poll_wait_seconds=1", "--max_num_load_retries=0")
WAIT_S = 60.0


# ------------------------------------------------------------------------ helpers


def install_version(source_base: str, source_version: int, base: Path, version: int) -> None:
    """Copy a version directory and rename it into place, as an operator's rollout should."""
    staging = base / f".incoming-{version}"
    shutil.copytree(Path(source_base) / str(source_version), staging)
    os.rename(staging, base / str(version))


def model_base(saved_models: object, root: Path, name: str, *versions: tuple[int, int]) -> Path:
    """A fresh base path with (version, source_version) pairs from multi_version."""
    base = root / name
    base.mkdir()
    for version, source in versions:
        install_version(saved_models.multi_version, source, base, version)  # type: ignore[attr-defined]
    return base


def model_entry(name: str, base: Path, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'


def config_text(*entries: str) -> str:
    return "model_config_list { " + " ".join(entries) + " }"


@dataclass
class Client:
    """gRPC and REST calls against one data plane."""

    plane: DataPlaneProcess

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.plane.grpc_target)
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.http = requests.Session()

    def predict_grpc(self, name: str, version: int | None = None, label: str = "") -> float:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        if label:
            request.model_spec.version_label = label
        request.inputs["x"].CopyFrom(_float_tensor(1.0))
        response = self.predict_stub.Predict(request, timeout=30)
        return float(tensors.to_ndarray(response.outputs["y"]).item())

    def predict_rest(self, name: str, version: int | None = None, label: str = "") -> float:
        path = f"/v1/models/{name}"
        if version is not None:
            path += f"/versions/{version}"
        if label:
            path += f"/labels/{label}"
        response = self.http.post(
            f"{self.plane.rest_url}{path}:predict", json={"instances": [[1.0]]}, timeout=30
        )
        assert response.status_code == 200, response.text
        return float(response.json()["predictions"][0][0])

    def rest_error(self, path: str) -> tuple[int, str]:
        response = self.http.post(
            f"{self.plane.rest_url}{path}:predict", json={"instances": [[1.0]]}, timeout=30
        )
        return response.status_code, response.json()["error"]

    def reload(self, text: str) -> tuple[grpc.StatusCode, str]:
        """HandleReloadConfigRequest's outcome: a refusal is the RPC's status, as upstream."""
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text, request.config)
        try:
            response = self.model_stub.HandleReloadConfigRequest(request, timeout=WAIT_S)
        except grpc.RpcError as error:
            return error.code(), error.details()
        assert (response.status.error_code, response.status.error_message) == (0, "")
        return grpc.StatusCode.OK, ""

    def status(self, name: str) -> dict[int, tuple[int, int, str]]:
        """version -> (state, error_code, error_message)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        response = self.model_stub.GetModelStatus(request, timeout=30)
        return {
            s.version: (s.state, s.status.error_code, s.status.error_message)
            for s in response.model_version_status
        }

    def states(self, name: str) -> dict[int, int]:
        try:
            return {v: s[0] for v, s in self.status(name).items()}
        except grpc.RpcError:
            return {}

    def close(self) -> None:
        self.channel.close()
        self.http.close()


def _float_tensor(value: float) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)] * 2
        ),
        float_val=[value],
    )


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def serve(
    start_dataplane: Callable[..., DataPlaneProcess],
) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def start(*flags: str) -> Client:
        client = Client(start_dataplane(*FAST_FLAGS, *flags))
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()


# ------------------------------------------------------------------------ reloads


def test_reload_rpc_adds_repolicies_and_removes_models(
    saved_models: object, tmp_path: Path, serve: Callable[..., Client]
) -> None:
    a = model_base(saved_models, tmp_path, "a", (1, 1), (2, 2))
    b = model_base(saved_models, tmp_path, "b", (7, 1))
    config_file = tmp_path / "models.config"
    config_file.write_text(config_text(model_entry("a", a)))
    client = serve(f"--model_config_file={config_file}")
    assert client.predict_grpc("a") == 3.5

    added = client.reload(config_text(model_entry("a", a), model_entry("b", b)))
    assert added == (grpc.StatusCode.OK, "")
    assert client.predict_grpc("b") == 2.5 and client.predict_rest("b", version=7) == 2.5

    pinned = client.reload(
        config_text(
            model_entry("a", a, "model_version_policy { specific { versions: 1 } }"),
            model_entry("b", b),
        )
    )
    assert pinned == (grpc.StatusCode.OK, "")
    assert client.predict_grpc("a") == 2.5 and client.predict_rest("a") == 2.5
    wait_for(lambda: client.states("a") == {2: END, 1: AVAILABLE}, "a pinned to version 1")

    removed = client.reload(config_text(model_entry("a", a)))
    assert removed == (grpc.StatusCode.OK, "")
    assert client.rest_error("/v1/models/b") == (
        404,
        "Servable not found for request: Latest(b)",
    )
    assert client.predict_grpc("a") == 3.5

    invalid = client.reload(config_text(model_entry("a", a), model_entry("a", b)))
    assert invalid == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Illegal to list model a multiple times in config list",
    )
    assert client.predict_grpc("a") == 3.5


def test_edited_config_file_is_applied_and_a_bad_edit_is_ignored(
    saved_models: object, tmp_path: Path, serve: Callable[..., Client]
) -> None:
    a = model_base(saved_models, tmp_path, "a", (1, 1))
    b = model_base(saved_models, tmp_path, "b", (1, 2))
    config_file = tmp_path / "models.config"
    config_file.write_text(config_text(model_entry("a", a)))
    client = serve(f"--model_config_file={config_file}", "--model_config_file_poll_wait_seconds=1")

    config_file.write_text(config_text(model_entry("b", b)))
    wait_for(lambda: client.states("a") == {1: END}, "a removed by the edited file")
    assert client.predict_rest("b") == 3.5

    config_file.write_text(config_text(model_entry("b", b)) + " this is not a proto")
    time.sleep(2.5)  # two poll rounds
    assert client.predict_grpc("b") == 3.5
    log_text = client.plane.log_path.read_text()
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:" in log_text
    assert f"Keeping the running config: Invalid protobuf file: '{config_file}'" in log_text


def test_bad_config_file_at_start_exits_non_zero(
    tmp_path: Path, start_dataplane: Callable[..., DataPlaneProcess]
) -> None:
    config_file = tmp_path / "models.config"
    config_file.write_text(config_text(model_entry("a", Path("relative/a"))))

    with pytest.raises(RuntimeError, match="exited with 255") as raised:
        start_dataplane(f"--model_config_file={config_file}")

    assert (
        "Failed to start server. Error: INVALID_ARGUMENT: Expected model a to have an absolute "
        "path or URI; got base_path()=relative/a"
    ) in str(raised.value)


def test_unparsable_config_file_at_start_fails_as_tf_serving(
    tmp_path: Path, start_dataplane: Callable[..., DataPlaneProcess]
) -> None:
    config_file = tmp_path / "models.config"
    config_file.write_text("model_config_list { config { nmae: 'a' } }")

    with pytest.raises(RuntimeError, match="exited with 255") as raised:
        start_dataplane(f"--model_config_file={config_file}")

    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:30: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "nmae".'
    ) in str(raised.value)
    assert (
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{config_file}'"
    ) in str(raised.value)


# ------------------------------------------------------------------------ version directories


def test_version_directories_appearing_and_disappearing(
    saved_models: object, tmp_path: Path, serve: Callable[..., Client]
) -> None:
    a = model_base(saved_models, tmp_path, "a", (1, 1))
    client = serve("--model_name=a", f"--model_base_path={a}")
    assert client.predict_grpc("a") == 2.5

    install_version(saved_models.multi_version, 2, a, 2)  # type: ignore[attr-defined]
    wait_for(lambda: client.states("a") == {2: AVAILABLE, 1: END}, "version 2 served")
    assert client.predict_rest("a") == 3.5

    shutil.rmtree(a / "2")  # rollback: the operator deletes the bad release
    wait_for(lambda: client.states("a") == {2: END, 1: AVAILABLE}, "version 1 back")
    assert client.predict_grpc("a") == 2.5


def test_corrupt_version_is_isolated_with_its_error_in_status(
    saved_models: object, tmp_path: Path, serve: Callable[..., Client]
) -> None:
    a = model_base(saved_models, tmp_path, "a", (1, 1))
    b = model_base(saved_models, tmp_path, "b", (1, 2))
    config_file = tmp_path / "models.config"
    config_file.write_text(config_text(model_entry("a", a), model_entry("b", b)))
    client = serve(f"--model_config_file={config_file}")

    (a / "2").mkdir()
    (a / "2" / "saved_model.pb").write_bytes(b"half-copied garbage")
    wait_for(lambda: client.states("a").get(2) == END, "corrupt version 2 to fail")

    state, code, message = client.status("a")[2]
    assert state == END and code != 0 and message != ""
    assert client.status("a")[1] == (AVAILABLE, 0, "")
    assert client.predict_grpc("a") == 2.5 and client.predict_rest("a") == 2.5
    assert client.predict_grpc("b") == 3.5


def test_reload_naming_a_corrupt_model_fails_and_keeps_serving(
    saved_models: object, tmp_path: Path, serve: Callable[..., Client]
) -> None:
    a = model_base(saved_models, tmp_path, "a", (1, 1))
    bad = tmp_path / "bad"
    (bad / "4").mkdir(parents=True)
    (bad / "4" / "saved_model.pb").write_bytes(b"not a SavedModel")
    client = serve("--model_name=a", f"--model_base_path={a}")

    code, message = client.reload(config_text(model_entry("a", a), model_entry("bad", bad)))

    assert code is grpc.StatusCode.UNKNOWN
    assert message.startswith(
        "1 model(s) did not become available: {{{name: bad version: 4} due to error: "
    )
    assert client.predict_grpc("a") == 2.5
    later = client.reload(config_text(model_entry("a", a, "model_version_policy { all {} }")))
    assert later == (grpc.StatusCode.OK, "")


# ------------------------------------------------------------------------ labels


def test_labels_route_over_grpc_and_rest(
    saved_models: object, tmp_path: Path, serve: Callable[..., Client]
) -> None:
    a = model_base(saved_models, tmp_path, "a", (1, 1), (2, 2))
    labels = (
        "model_version_policy { all {} } "
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
    )
    config_file = tmp_path / "models.config"
    config_file.write_text(config_text(model_entry("a", a, "model_version_policy { all {} }")))
    client = serve(f"--model_config_file={config_file}")
    # As in TF Serving, a label names a version that is AVAILABLE already: load, then label.
    labelled = client.reload(config_text(model_entry("a", a, labels)))
    assert labelled == (grpc.StatusCode.OK, "")

    assert client.predict_grpc("a", label="stable") == 2.5
    assert client.predict_grpc("a", label="canary") == 3.5
    assert client.predict_rest("a", label="stable") == 2.5
    assert client.predict_rest("a", label="canary") == 3.5
    assert client.rest_error("/v1/models/a/labels/beta") == (
        400,
        "Unrecognized servable version label: beta",
    )

    unavailable = client.reload(
        config_text(model_entry("a", a, 'version_labels { key: "stable" value: 1 }'))
    )
    assert unavailable == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "Request to assign label to version 1 of model a, which is not currently available "
        "for inference",
    )
    assert client.predict_rest("a", label="stable") == 2.5  # the old labels still hold


# ------------------------------------------------------------------------ swaps under load


class RequestLoop:
    """Threads calling Predict (Latest) in a loop, counting answers per value and failures."""

    def __init__(self, call: Callable[[], float], threads: int) -> None:
        self._call = call
        self._stop = threading.Event()
        self.values: Counter[float] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> RequestLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self._call()
            except Exception as exc:
                with self._lock:
                    self.failures.append(repr(exc)[:300])
                continue
            with self._lock:
                self.values[value] += 1

    @property
    def total(self) -> int:
        return sum(self.values.values()) + len(self.failures)


@pytest.mark.slow
def test_twenty_version_swaps_under_load_fail_no_request(
    saved_models: object, tmp_path: Path, serve: Callable[..., Client]
) -> None:
    a = model_base(saved_models, tmp_path, "a", (1, 1))
    client = serve("--model_name=a", f"--model_base_path={a}")
    grpc_client, rest_client = Client(client.plane), Client(client.plane)
    try:
        with (
            RequestLoop(lambda: grpc_client.predict_grpc("a"), threads=3) as via_grpc,
            RequestLoop(lambda: rest_client.predict_rest("a"), threads=3) as via_rest,
        ):
            for version, source in zip(range(2, 22), itertools.cycle((2, 1)), strict=False):
                install_version(saved_models.multi_version, source, a, version)  # type: ignore[attr-defined]
                wait_for(
                    lambda v=version: (
                        client.states("a").get(v) == AVAILABLE
                        and client.states("a").get(v - 1) == END
                    ),
                    f"swap to version {version}",
                )
                shutil.rmtree(a / str(version - 1))
        swaps_seen = sorted(client.states("a").items())
    finally:
        grpc_client.close()
        rest_client.close()

    print(
        f"\nswap test: gRPC {via_grpc.total} requests ({dict(via_grpc.values)}), "
        f"{len(via_grpc.failures)} failed; REST {via_rest.total} requests "
        f"({dict(via_rest.values)}), {len(via_rest.failures)} failed"
    )
    assert via_grpc.failures == [] and via_rest.failures == []
    assert set(via_grpc.values) == set(via_rest.values) == set(Y_BY_VERSION_SOURCE.values())
    assert via_grpc.total > 100 and via_rest.total > 100
    assert swaps_seen[-1] == (21, AVAILABLE)
    assert [state for _, state in swaps_seen[:-1]] == [END] * 20
