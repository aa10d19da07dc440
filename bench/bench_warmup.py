"""Latency of the first 10 requests after a version swap, with and without warmup.

A data plane serves the small CNN, version 1, and answers 50 requests (so the server's own
code paths are warm and only the new version is cold). Version 2 (same model, shipping
`assets.extra/tf_serving_warmup_requests` with one batch-1 Predict) is dropped into the base
path; as soon as GetModelStatus reports it AVAILABLE, 10 sequential batch-1 Predicts pinned to
version 2 are timed, then 50 more give the steady state. Run once with
`--enable_model_warmup=false` and once with warmup on; prints each request's latency and the
first request's ratio to the steady-state p50.

Both modes wait the same `--settle_seconds` after AVAILABLE before the first request, and the
same pause is timed once more on the warm version ("after idle"): on this VM the first request
after any idle second costs ~2 ms whatever the model's state (an idle vCPU wakes slowly and
cold), and without the pause the run without warmup would send its first request to a CPU
still hot from the load, the one with warmup to a CPU idle since warmup ended.

    python bench/bench_warmup.py [--rounds 3] [--settle_seconds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from dataplane import tensors
from examples import builders
from tests.support.processes import start_dataplane

AVAILABLE = 30
FIRST = 10
STEADY = 50


def cnn_request(version: int | None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cnn"
    if version is not None:
        request.model_spec.version.value = version
    x = np.random.default_rng(0).standard_normal((1, *builders.CNN_INPUT_SHAPE))
    tensors.fill_tensor_proto(request.inputs["x"], x.astype(np.float32), as_tensor_content=True)
    return request


def build_versions(root: Path) -> Path:
    """Version 1 in the base path; version 2 (with warmup data) staged beside it."""
    builders.build_cnn(str(root / "cnn"), 1)
    staged = Path(builders.build_cnn(str(root / "staged"), 2))
    builders.write_warmup_requests(str(staged), [cnn_request(None)])
    return staged


def wait_available(channel: grpc.Channel, version: int) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "cnn"
    request.model_spec.version.value = version
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            statuses = stub.GetModelStatus(request, timeout=10).model_version_status
            if statuses and statuses[0].state == AVAILABLE:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"version {version} never became AVAILABLE")


def timed(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, version: int, count: int
) -> list[float]:
    request = cnn_request(version)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        stub.Predict(request, timeout=60)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


@dataclass(frozen=True)
class Swap:
    """Version 2's latencies (ms) after one swap."""

    first: list[float]  # the first 10 requests
    steady: float  # p50 of the 50 after them
    after_idle: float  # one request after the same pause, on the warm version


def one_swap(root: Path, staged: Path, warmup: bool, settle_seconds: float) -> Swap:
    base = root / f"base-{warmup}-{time.monotonic_ns()}"
    shutil.copytree(root / "cnn", base)
    server = start_dataplane(
        "--model_name=cnn",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=1",
        f"--enable_model_warmup={str(warmup).lower()}",
        log_dir=root / "logs",
    )
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            timed(stub, 1, STEADY)  # a server already in service: only the new version is cold
            shutil.copytree(staged, base / ".incoming")
            os.rename(base / ".incoming", base / "2")
            wait_available(channel, 2)
            time.sleep(settle_seconds)
            first = timed(stub, 2, FIRST)
            steady = statistics.median(timed(stub, 2, STEADY))
            time.sleep(settle_seconds)
            after_idle = timed(stub, 2, 1)[0]
        return Swap(first, steady, after_idle)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle_seconds", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        staged = build_versions(root)
        summary: dict[bool, list[float]] = {False: [], True: []}
        for round_index in range(args.rounds):
            for warmup in (False, True):
                swap = one_swap(root, staged, warmup, args.settle_seconds)
                label = "with warmup   " if warmup else "without warmup"
                first = swap.first
                print(
                    f"round {round_index + 1} {label}: first {FIRST} (ms) "
                    + " ".join(f"{v:.1f}" for v in first)
                    + f" | steady p50 {swap.steady:.2f} ms | after idle {swap.after_idle:.1f} ms"
                    f" | first/after idle {first[0] / swap.after_idle:.1f}x"
                    f" | mean of first {FIRST} {statistics.fmean(first):.2f} ms",
                    flush=True,
                )
                summary[warmup].append(first[0])
    without = statistics.median(summary[False])
    with_warmup = statistics.median(summary[True])
    print(
        f"median first request after swap: without warmup {without:.1f} ms, "
        f"with warmup {with_warmup:.1f} ms, ratio {without / with_warmup:.1f}x"
    )


if __name__ == "__main__":
    main()
