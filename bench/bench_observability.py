"""Cost of request logging and tracing: half_plus_two Predict, batch 1, over gRPC (h2load)
and REST (wrk), with both off, logging at sampling rate 0.01 and 1.0 (TFRecord), and tracing
at sample ratio 0.1 and 1.0 (exported over OTLP/gRPC to a counting collector run by this
script).

Each mode gets a fresh `python -m dataplane`; the modes alternate over `--rounds` so a busy
machine weighs on all of them alike, and the best round of each protocol is printed with its
ratio to "off". After each run the server is stopped (SIGTERM: the drain flushes the log and
the spans) and the records on disk and spans received are counted.

    python bench/bench_observability.py [--seconds 3] [--rounds 3 (0: in-process only)]
        [--concurrency 8]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import numpy as np
import orjson
import tensorflow as tf
from google.protobuf import text_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from bench.harness import Measurement, h2load, wrk
from dataplane import tensors
from dataplane.request_log import (
    LogSettings,
    RequestLogger,
    RotatingFile,
    logging_answer,
    models_logging,
    prediction_log,
)
from dataplane.tracing import Tracing
from examples import builders
from tests.support.processes import free_port, start_dataplane

MODES = ("off", "log 0.01", "log 1.0", "trace 0.1", "trace 1.0")
METHOD = "/tensorflow.serving.PredictionService/Predict"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class CountingCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that only counts spans (what a collector costs the server is
    the export itself, not what the collector does with it)."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(self, request, context):
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self.spans += count
        return trace_service_pb2.ExportTraceServiceResponse()


def write_config(root: Path, base_path: str, rate: float | None, prefix: Path) -> Path:
    logging = (
        f"logging_config {{ sampling_config {{ sampling_rate: {rate} }} "
        f'log_collector_config {{ filename_prefix: "{prefix}" }} }}'
        if rate is not None
        else ""
    )
    path = root / f"models-{rate}.config"
    path.write_text(
        f'model_config_list {{ config {{ name: "hpt" base_path: "{base_path}" '
        f'model_platform: "tensorflow" {logging} }} }}'
    )
    return path


def predict_message() -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hpt"
    tensors.fill_tensor_proto(
        request.inputs["x"], np.array([1.0], np.float32), as_tensor_content=True
    )
    return request.SerializeToString()


def records(prefix: Path) -> int:
    return sum(sum(1 for _ in tf.data.TFRecordDataset(p)) for p in glob.glob(f"{prefix}.*"))


def run(
    mode: str, root: Path, base_path: str, collector: tuple[CountingCollector, int], n: int
) -> tuple[Measurement, Measurement, int]:
    """One fresh server in `mode`; returns gRPC and REST figures and what it logged/traced."""
    prefix = root / f"logs-{n}" / "hpt"
    rate = {"log 0.01": 0.01, "log 1.0": 1.0}.get(mode)
    flags = [f"--model_config_file={write_config(root, base_path, rate, prefix)}"]
    counter, port = collector
    before = counter.spans
    if mode.startswith("trace"):
        flags.append(f"--tracing_otlp_endpoint=http://127.0.0.1:{port}")
        flags.append(f"--tracing_sample_ratio={mode.split()[1]}")
    server = start_dataplane(*flags, log_dir=root)
    try:
        c, seconds = ARGS.concurrency, ARGS.seconds
        grpc_m = h2load(server.grpc_target, METHOD, predict_message(), c, 1, seconds)
        body = orjson.dumps({"instances": [1.0]})
        rest_m = wrk(f"{server.rest_url}/v1/models/hpt:predict", body, c, 1, seconds)
    finally:
        server.stop()
    return grpc_m, rest_m, records(prefix) + counter.spans - before


def per_call_us(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def in_process_costs(root: Path) -> None:
    """CPU per request of each piece, measured in this process (robust on a busy machine,
    where the live ratios above swing by tens of percent between runs)."""
    request = predict_pb2.PredictRequest.FromString(predict_message())
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "hpt"
    response.model_spec.version.value = 1
    tensors.fill_tensor_proto(
        response.outputs["y"], np.array([2.5], np.float32), as_tensor_content=False
    )
    logger = RequestLogger(LogSettings(), CollectorRegistry())
    config = text_format.Parse(
        write_config(root, "/m", 0.01, root / "micro" / "hpt").read_text(),
        model_server_config_pb2.ModelServerConfig(),
    )
    logger.configure(config)
    settings = models_logging(config)["hpt"]

    def answer(result: object) -> object:
        return response

    def pair(result: object, reply: object) -> tuple:
        return request, reply

    off = per_call_us(lambda: logging_answer(None, "hpt", "predict", answer, pair)(1), 200_000)
    drawn = per_call_us(lambda: logging_answer(logger, "hpt", "predict", answer, pair)(1), 200_000)
    logger.close()
    target = RotatingFile(settings, LogSettings())
    write = per_call_us(
        lambda: target.write(prediction_log(settings, "predict", (request, response), 0.0)),
        20_000,
    )
    target.close()
    tracing = Tracing(BatchSpanProcessor(InMemorySpanExporter()))

    def traced() -> None:
        trace = tracing.begin("PredictionService/Predict", [("traceparent", TRACEPARENT)])
        trace.timed("decode", answer)(1)
        future: Future[object] = Future()
        trace.submit(lambda: future)
        trace.answer(answer)(1)
        future.set_result(response)

    trace_us = per_call_us(traced, 20_000)
    tracing.shutdown()
    print("in-process CPU per request (us):")
    print(f"  request path, logging off {off:.2f}; logging at 0.01 {drawn:.2f}")
    print(f"  writer, one PredictionLog built, serialized, written (rate 1.0) {write:.1f}")
    print(f"  tracing: stamps + 4 spans made and queued for export {trace_us:.1f}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        in_process_costs(Path(tmp))
        if not ARGS.rounds:
            return  # --rounds 0: the in-process figures only
        root = Path(tmp)
        base_path = str(root / "hpt")
        builders.build_half_plus_two_tf1(base_path, 1)
        counter = CountingCollector()
        collector = grpc.server(ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, collector)
        port = free_port()
        collector.add_insecure_port(f"127.0.0.1:{port}")
        collector.start()
        best_grpc: dict[str, Measurement] = {}
        best_rest: dict[str, Measurement] = {}
        written: dict[str, int] = {}
        n = 0
        for _ in range(ARGS.rounds):
            for mode in MODES:
                n += 1
                grpc_m, rest_m, written[mode] = run(mode, root, base_path, (counter, port), n)
                if mode not in best_grpc or grpc_m.examples_per_s > best_grpc[mode].examples_per_s:
                    best_grpc[mode] = grpc_m
                if mode not in best_rest or rest_m.examples_per_s > best_rest[mode].examples_per_s:
                    best_rest[mode] = rest_m
        collector.stop(0)
    print(f"concurrency {ARGS.concurrency}, {ARGS.seconds:.0f} s per run, best of {ARGS.rounds}")
    print(
        f"{'mode':<9} {'gRPC/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}  "
        f"{'REST/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}  records/spans (last run)"
    )
    for mode in MODES:
        g, r = best_grpc[mode], best_rest[mode]
        print(
            f"{mode:<9} {g.examples_per_s:>7.0f} {g.p50_ms:>7.2f} {g.p99_ms:>7.2f} "
            f"{g.ratio_to(best_grpc['off']):>6.2f}  {r.examples_per_s:>7.0f} {r.p50_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.ratio_to(best_rest['off']):>6.2f}  {written[mode]}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    ARGS = parser.parse_args()
    main()
