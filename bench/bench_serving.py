"""Predict over gRPC and REST vs the raw in-process model call (issue 2's speed target).

Models: a trivial one (half_plus_two, TF1 graph) and an MLP 256->1024->1024->10. For each
model, batch size (1, 8) and concurrency (1, 8, 32) it measures the raw prepared callable
in-process (the same C++ callable the server uses, the strictest baseline) and the conventional
TF2 call (`tf.saved_model.load(...).signatures[...]`, what other Python servers run), then the same
request through a live `python -m dataplane` over REST (wrk) and gRPC (h2load), and prints
examples/s, p50/p99 and the ratios to both. Targets: geometric
mean of the ratios >= 0.6 (REST) and >= 0.8 (gRPC); p50 at concurrency 1 within 0.3 ms of raw.

    python bench/bench_serving.py [--seconds 4] [--protocols grpc] [--models half_plus_two]
        [--batches 1]

The narrowing flags make short A/B runs (e.g. one transport against another, in alternation).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import numpy as np
import orjson
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench.harness import (
    Measurement,
    add_dataplane_flag_option,
    closed_loop,
    geometric_mean,
    h2load,
    wrk,
)
from dataplane import tensors
from dataplane.servable import SessionOptions, load_servable
from examples import builders
from tests.support.processes import start_dataplane

CONCURRENCY = (1, 8, 32)
BATCHES = (1, 8)
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True)
class BenchModel:
    name: str
    alias: str
    width: int

    def batch(self, rows: int) -> np.ndarray:
        rng = np.random.default_rng(rows)
        return rng.standard_normal((rows, self.width)).astype(np.float32)


MODELS = (BenchModel("half_plus_two", "x", 1), BenchModel("mlp", "x", 256))


def build_models(root: Path) -> str:
    builders.build_half_plus_two_tf1(str(root / "half_plus_two"), 1)
    builders.build_mlp(str(root / "mlp"), 1, sizes=(256, 1024, 1024, 10))
    config = root / "models.config"
    entries = "".join(
        f'config {{ name: "{m.name}" base_path: "{root / m.name}" model_platform: "tensorflow" }}'
        for m in MODELS
    )
    config.write_text(f"model_config_list {{ {entries} }}")
    return str(config)


def predict_message(model: BenchModel, rows: int) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.name
    tensors.fill_tensor_proto(
        request.inputs[model.alias], model.batch(rows), as_tensor_content=True
    )
    return request.SerializeToString()


def rest_body(model: BenchModel, rows: int) -> bytes:
    return orjson.dumps({"instances": model.batch(rows).tolist()})


def check_server(target: str, rest_url: str, model: BenchModel) -> None:
    """One real call per protocol, so the load generators' 200s mean real answers."""
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest.FromString(predict_message(model, 1))
        assert stub.Predict(request, timeout=30).outputs
    import urllib.request

    with urllib.request.urlopen(
        f"{rest_url}/v1/models/{model.name}:predict", data=rest_body(model, 1), timeout=30
    ) as response:
        assert b"predictions" in response.read()


def row(label: str, m: Measurement, raw: Measurement, tf2: Measurement) -> str:
    return (
        f"{label:<30} {m.examples_per_s:>11,.0f} ex/s  p50 {m.p50_ms:7.3f} ms  "
        f"p99 {m.p99_ms:7.3f} ms  ratio {m.ratio_to(raw):5.2f}  (vs TF2 fn {m.ratio_to(tf2):5.2f})"
    )


@dataclass
class Tally:
    """Ratios per protocol against both baselines, and p50 gaps at concurrency 1."""

    ratios: dict[str, list[float]] = field(default_factory=lambda: {"rest": [], "grpc": []})
    tf2_ratios: dict[str, list[float]] = field(default_factory=lambda: {"rest": [], "grpc": []})
    p50_gaps: dict[str, list[float]] = field(default_factory=lambda: {"rest": [], "grpc": []})

    def add(self, protocol: str, m: Measurement, raw: Measurement, tf2: Measurement, c: int):
        self.ratios[protocol].append(m.ratio_to(raw))
        self.tf2_ratios[protocol].append(m.ratio_to(tf2))
        if c == 1:
            self.p50_gaps[protocol].append(m.p50_ms - raw.p50_ms)

    def summary(self) -> str:
        lines = []
        for protocol, target in (("rest", 0.6), ("grpc", 0.8)):
            if not self.ratios[protocol]:
                continue
            lines.append(
                f"{protocol.upper():>4}: geometric mean ratio "
                f"{geometric_mean(self.ratios[protocol]):.2f} vs the prepared callable, "
                f"{geometric_mean(self.tf2_ratios[protocol]):.2f} vs the TF2 function "
                f"(target >= {target}); worst p50 gap at c=1 "
                f"{max(self.p50_gaps[protocol]):.3f} ms (target <= 0.3)"
            )
        return "\n".join(lines)


def tf2_function(path: str, alias: str, batch: np.ndarray) -> Callable[[], object]:
    """The conventional in-process call (tf.saved_model.load + signature), for reference."""
    import tensorflow as tf

    function = tf.saved_model.load(path).signatures["serving_default"]
    tensor = tf.constant(batch)
    return lambda: function(**{alias: tensor})


@dataclass(frozen=True)
class Scope:
    """What one run measures (all of it by default)."""

    protocols: tuple[str, ...] = ("rest", "grpc")
    batches: tuple[int, ...] = BATCHES


def bench_model(
    model: BenchModel, model_dir: str, server, seconds: float, tally: Tally, scope: Scope
) -> None:
    servable = load_servable(model.name, 1, model_dir, SessionOptions())
    signature = servable.signature("serving_default")
    check_server(server.grpc_target, server.rest_url, model)
    url = f"{server.rest_url}/v1/models/{model.name}:predict"
    for rows in scope.batches:
        feeds = {model.alias: model.batch(rows)}
        message, body = predict_message(model, rows), rest_body(model, rows)
        reference = tf2_function(model_dir, model.alias, model.batch(rows))
        for c in CONCURRENCY:
            raw = closed_loop(functools.partial(signature.run, feeds), c, rows, seconds)
            tf2 = closed_loop(reference, c, rows, seconds)
            print(
                f"{model.name} b={rows} c={c}".ljust(30)
                + f" {raw.examples_per_s:>11,.0f} ex/s  p50 {raw.p50_ms:7.3f} ms  "
                f"p99 {raw.p99_ms:7.3f} ms  (raw; TF2 fn {tf2.examples_per_s:,.0f} ex/s, "
                f"p50 {tf2.p50_ms:.3f} ms)"
            )
            if "rest" in scope.protocols:
                rest = wrk(url, body, c, rows, seconds)
                print(row("    REST", rest, raw, tf2), flush=True)
                tally.add("rest", rest, raw, tf2, c)
            if "grpc" in scope.protocols:
                grpc_m = h2load(server.grpc_target, PREDICT_METHOD, message, c, rows, seconds)
                print(row("    gRPC", grpc_m, raw, tf2), flush=True)
                tally.add("grpc", grpc_m, raw, tf2, c)
    servable.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--protocols", nargs="+", choices=("rest", "grpc"), default=["rest", "grpc"]
    )
    parser.add_argument("--models", nargs="+", choices=[m.name for m in MODELS])
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    add_dataplane_flag_option(parser)
    args = parser.parse_args()
    scope = Scope(tuple(args.protocols), tuple(args.batches))
    models = [m for m in MODELS if args.models is None or m.name in args.models]
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        config = build_models(Path(tmp))
        server = start_dataplane(f"--model_config_file={config}", *args.dataplane_flag, log_dir=tmp)
        try:
            for model in models:
                model_dir = str(Path(tmp, model.name, "1"))
                bench_model(model, model_dir, server, args.seconds, tally, scope)
        finally:
            server.stop()
    print(tally.summary())


if __name__ == "__main__":
    main()
