"""A steady client load through the front door, counting every request and every failure.

Clients as users run them: the official TF Serving gRPC client (tensorflow-serving-api) and
curl on the REST port, one after the other in a loop on its own thread, each request checked
for half_plus_two's exact answer. A wrong answer counts as a failure like an error does.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

MODEL = "half_plus_two"
INSTANCES = [1.0, 2.0, 5.0]
EXPECTED = [2.5, 3.0, 4.5]  # y = x / 2 + 2
REQUEST_TIMEOUT_S = 10.0
MAX_KEPT_ERRORS = 20
NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "nginx.conf"


def settle_seconds() -> float:
    """How long a rolling restart waits after a plane serves again before stopping the next:
    nginx leaves a plane that failed out for fail_timeout, and with both out it answers 502."""
    timeouts = {int(s) for s in re.findall(r"fail_timeout=(\d+)s", NGINX_CONF.read_text())}
    assert len(timeouts) == 1, timeouts
    return timeouts.pop() + 1.0


def predict_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(INSTANCES))]
    )
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape)
    tensor.float_val.extend(INSTANCES)
    request.inputs["x"].CopyFrom(tensor)
    return request


def grpc_predict(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> list[float]:
    """half_plus_two's `y` for INSTANCES, through the official client."""
    response = stub.Predict(predict_request(), timeout=REQUEST_TIMEOUT_S)
    return list(response.outputs["y"].float_val)


def curl_predict(rest_port: int) -> list[float]:
    """half_plus_two's predictions for INSTANCES, with curl as the quick start runs it."""
    url = f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}:predict"
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-m", str(REQUEST_TIMEOUT_S), "-X", "POST", url,
         "-d", json.dumps({"instances": INSTANCES})],
        capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S + 5,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"curl exited {out.returncode}: {out.stderr.strip()} {out.stdout}")
    return json.loads(out.stdout)["predictions"]


@dataclass
class Counts:
    total: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class SteadyLoad:
    """gRPC and REST predictions through nginx, back to back, until stopped."""

    def __init__(self, grpc_port: int, rest_port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._rest_port = rest_port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.counts = {"grpc": Counts(), "rest": Counts()}
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=REQUEST_TIMEOUT_S * 3)
        self._channel.close()

    def _run(self) -> None:
        calls = {
            "grpc": lambda: grpc_predict(self._stub),
            "rest": lambda: curl_predict(self._rest_port),
        }
        while not self._stop.is_set():
            for kind, call in calls.items():
                self._record(kind, call)

    def _record(self, kind: str, call: Callable[[], list[float]]) -> None:
        try:
            answer = call()
            error = None if answer == EXPECTED else f"wrong answer {answer}"
        except Exception as exc:  # every failure is counted, whatever its kind
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            counts = self.counts[kind]
            counts.total += 1
            if error is not None:
                counts.failed += 1
                if len(counts.errors) < MAX_KEPT_ERRORS:
                    counts.errors.append(error)

    def snapshot(self) -> dict[str, Counts]:
        with self._lock:
            return {k: Counts(c.total, c.failed, list(c.errors)) for k, c in self.counts.items()}
