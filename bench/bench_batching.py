"""Server-side batching over gRPC vs no batching vs the raw in-process call (issue 4's target).

Models: an MLP 256->1024->1024->10 and a small CNN on 64x64x3. Clients send one example per
request (h2load, closed loop) at concurrency 1/8/32/64, first to a data plane without
batching, then to one with `--enable_batching`. The raw reference is the prepared model call
in-process at batch size = concurrency (the batch the batcher can form), one caller, measured
in the same run. Targets at concurrency 32: batched >= 3x unbatched, batched >= 0.6 of raw at
batch 32, batched p99 <= batch_timeout + 2 x the raw batch-32 call.

The ceiling is the same load against bench/canned_server.py: our native transport answering
every call with a canned response and doing nothing else. h2load and the server share the 2
cores, so it is the most any server behind this transport can reach on this machine; its
ratio to raw says how much of a target the machine leaves reachable at all.

    python bench/bench_batching.py [--seconds 4] [--timeout_micros 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tensorflow_serving.apis import predict_pb2

from bench.harness import Measurement, add_dataplane_flag_option, closed_loop, h2load
from dataplane import tensors
from dataplane.servable import SessionOptions, load_servable
from examples import builders
from tests.support.processes import DataPlaneProcess, ServerProcess, free_port, start_dataplane

CONCURRENCY = (1, 8, 32, 64)
TARGET_CONCURRENCY = 32
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True)
class BenchModel:
    name: str
    example_shape: tuple[int, ...]

    def batch(self, rows: int) -> np.ndarray:
        rng = np.random.default_rng(rows)
        return rng.standard_normal((rows, *self.example_shape)).astype(np.float32)


MODELS = (BenchModel("mlp", (256,)), BenchModel("cnn", builders.CNN_INPUT_SHAPE))


@dataclass(frozen=True)
class Row:
    """One model and concurrency: the three measurements and the target checks."""

    model: str
    concurrency: int
    raw: Measurement
    ceiling: Measurement
    unbatched: Measurement
    batched: Measurement
    timeout_ms: float

    @property
    def speedup(self) -> float:
        return self.batched.examples_per_s / self.unbatched.examples_per_s

    @property
    def of_raw(self) -> float:
        return self.batched.ratio_to(self.raw)

    @property
    def p99_bound_ms(self) -> float:
        """batch_timeout + 2 x the raw call at this batch size (its p50)."""
        return self.timeout_ms + 2 * self.raw.p50_ms


def build_models(root: Path) -> str:
    builders.build_mlp(str(root / "mlp"), 1, sizes=(256, 1024, 1024, 10))
    builders.build_cnn(str(root / "cnn"), 1)
    entries = "".join(
        f'config {{ name: "{m.name}" base_path: "{root / m.name}" model_platform: "tensorflow" }}'
        for m in MODELS
    )
    config = root / "models.config"
    config.write_text(f"model_config_list {{ {entries} }}")
    return str(config)


def predict_message(model: BenchModel) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.name
    tensors.fill_tensor_proto(request.inputs["x"], model.batch(1), as_tensor_content=True)
    return request.SerializeToString()


def measure_raw(root: Path, seconds: float) -> dict[tuple[str, int], Measurement]:
    """The prepared call at batch size = concurrency, one caller (what one batch costs)."""
    raw = {}
    for model in MODELS:
        servable = load_servable(model.name, 1, str(root / model.name / "1"), SessionOptions())
        signature = servable.signature("serving_default")
        for rows in CONCURRENCY:
            call = functools.partial(signature.run, {"x": model.batch(rows)})
            call()
            raw[(model.name, rows)] = closed_loop(call, 1, rows, seconds)
        servable.close()
    return raw


@contextmanager
def serving(root: Path, *flags: str) -> Iterator[DataPlaneProcess]:
    server = start_dataplane(
        f"--model_config_file={root / 'models.config'}", *flags, log_dir=root / "logs"
    )
    try:
        yield server
    finally:
        server.stop()


def measure_server(target: str, seconds: float) -> dict[tuple[str, int], Measurement]:
    results = {}
    for model in MODELS:
        message = predict_message(model)
        for concurrency in CONCURRENCY:
            results[(model.name, concurrency)] = h2load(
                target, PREDICT_METHOD, message, concurrency, 1, seconds
            )
    return results


def measure_ceiling(root: Path, seconds: float) -> dict[tuple[str, int], Measurement]:
    """h2load against the canned server, answering with a model's one-row response."""
    results = {}
    for model in MODELS:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        tensors.fill_tensor_proto(  # both models answer y: float [1, 10] for one example
            response.outputs["y"], np.zeros((1, 10), np.float32), as_tensor_content=True
        )
        canned = root / f"{model.name}.response"
        canned.write_bytes(response.SerializeToString())
        port = free_port()
        script = Path(__file__).with_name("canned_server.py")
        server = ServerProcess(
            [sys.executable, str(script), str(port), str(canned)], [port], root / "canned.log"
        ).start()
        try:
            for concurrency in CONCURRENCY:
                results[(model.name, concurrency)] = h2load(
                    f"127.0.0.1:{port}", PREDICT_METHOD, predict_message(model), concurrency, 1,
                    seconds,
                )  # fmt: skip
        finally:
            server.stop()
    return results


def fmt(m: Measurement) -> str:
    return f"{m.examples_per_s:>9,.0f} ex/s  p50 {m.p50_ms:8.3f} ms  p99 {m.p99_ms:8.3f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(rows: list[Row]) -> None:
    for row in rows:
        print(f"{row.model} c={row.concurrency}")
        print(f"    raw b={row.concurrency:<3}  {fmt(row.raw)}")
        ceiling_ratio = row.ceiling.ratio_to(row.raw)
        print(f"    ceiling      {fmt(row.ceiling)}  ratio to raw {ceiling_ratio:5.2f}")
        unbatched_ratio = row.unbatched.ratio_to(row.raw)
        print(f"    unbatched    {fmt(row.unbatched)}  ratio to raw {unbatched_ratio:5.2f}")
        print(
            f"    batched      {fmt(row.batched)}  ratio to raw {row.of_raw:5.2f}  "
            f"x{row.speedup:5.2f} unbatched  p99 bound {row.p99_bound_ms:7.3f} ms"
        )
    print(f"\nTargets at concurrency {TARGET_CONCURRENCY}:")
    for row in rows:
        if row.concurrency != TARGET_CONCURRENCY:
            continue
        checks = (
            f"batched/unbatched {row.speedup:5.2f} (>= 3: {verdict(row.speedup >= 3)})",
            f"batched/raw {row.of_raw:4.2f} (>= 0.6: {verdict(row.of_raw >= 0.6)})",
            f"p99 {row.batched.p99_ms:.2f} ms <= {row.p99_bound_ms:.2f} ms: "
            f"{verdict(row.batched.p99_ms <= row.p99_bound_ms)}",
            f"(ceiling/raw {row.ceiling.ratio_to(row.raw):4.2f}, "
            f"batched/ceiling {row.batched.ratio_to(row.ceiling):4.2f})",
        )
        print(f"  {row.model:<4} " + "; ".join(checks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--timeout_micros",
        type=int,
        default=0,
        help="batch_timeout_micros (0: a batch runs as soon as a thread is free; with as "
        "many clients as one batch takes, a timeout only adds its own length per request)",
    )
    parser.add_argument("--threads", type=int, default=2, help="num_batch_threads")
    add_dataplane_flag_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_models(root)
        params = root / "batching.config"
        params.write_text(
            f"max_batch_size {{ value: {max(CONCURRENCY)} }}\n"
            f"batch_timeout_micros {{ value: {args.timeout_micros} }}\n"
            f"num_batch_threads {{ value: {args.threads} }}\n"
            "max_enqueued_batches { value: 100 }\n"
        )
        raw = measure_raw(root, args.seconds)
        ceiling = measure_ceiling(root, args.seconds)
        flags = args.dataplane_flag
        with serving(root, *flags) as server:
            unbatched = measure_server(server.grpc_target, args.seconds)
        batching = ("--enable_batching", f"--batching_parameters_file={params}")
        with serving(root, *batching, *flags) as server:
            batched = measure_server(server.grpc_target, args.seconds)
    rows = [
        Row(m.name, c, raw[(m.name, c)], ceiling[(m.name, c)], unbatched[(m.name, c)],
            batched[(m.name, c)], args.timeout_micros / 1e3)
        for m in MODELS
        for c in CONCURRENCY
    ]  # fmt: skip
    report(rows)


if __name__ == "__main__":
    main()
