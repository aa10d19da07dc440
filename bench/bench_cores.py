"""Core use per cell: served throughput against the raw call with 1 and `cores` callers (issue 20).

For each cell it measures the raw prepared callable in-process (one intra-op thread, the
server's default) with one caller and with as many callers as the machine has cores, then the
same request against a live data plane per design, in alternation (A, B, A, B, ...; the median
of `--rounds` is quoted), and prints:

- examples/s and p50, the ratio to the best raw call (1 or `cores` callers, same run);
- the server's CPU use in cores over the cell (utime+stime from /proc/<pid>/stat);
- each design's throughput against the first one's.

Designs: "cores" (the default: calls of 0.1-2 ms on a thread while a core is idle) and
"single" (--inline_model_call_micros=2000: every call under 2 ms on the dispatcher thread).
Cells: MLP (256-1024-1024-10) and a small CNN (64x64x3) at batch 1 and 8 with 8 and 32 clients
over gRPC, REST for the MLP ones, half_plus_two at 8 and 32 clients, and CNN batch 32 at one
client, where the server's CPU per request is compared with the raw call's.

    flock /work/coord/bench.lock python bench/bench_cores.py [--seconds 2] [--rounds 2]
        [--cells mlp cnn cnn32 half_plus_two] [--designs cores single]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import orjson
from tensorflow_serving.apis import predict_pb2

from bench.harness import Measurement, closed_loop, geometric_mean, h2load, wrk
from dataplane import tensors
from dataplane.offload import usable_cores
from dataplane.servable import SessionOptions, load_servable
from examples import builders
from tests.support.processes import DataPlaneProcess, start_dataplane

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
DESIGNS = {"cores": (), "single": ("--inline_model_call_micros=2000",)}


@dataclass(frozen=True)
class Model:
    name: str
    shape: tuple[int, ...]

    def batch(self, rows: int) -> np.ndarray:
        rng = np.random.default_rng(rows)
        return rng.standard_normal((rows, *self.shape)).astype(np.float32)


HPT = Model("half_plus_two", (1,))
MLP = Model("mlp", (256,))
CNN = Model("cnn", builders.CNN_INPUT_SHAPE)


@dataclass(frozen=True)
class Cell:
    model: Model
    rows: int
    clients: int
    protocol: str  # "grpc" or "rest"
    group: str  # the --cells name that selects it

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.model.name} b={self.rows} c={self.clients}"


def cells() -> list[Cell]:
    out = [
        Cell(model, rows, clients, protocol, model.name)
        for model in (MLP, CNN)
        for rows in (1, 8)
        for clients in (8, 32)
        for protocol in (("grpc", "rest") if model is MLP else ("grpc",))
    ]
    out.append(Cell(CNN, 32, 1, "grpc", "cnn32"))
    out += [Cell(HPT, 1, clients, "grpc", HPT.name) for clients in (8, 32)]
    return out


def build_models(root: Path) -> str:
    builders.build_half_plus_two_tf1(str(root / HPT.name), 1)
    builders.build_mlp(str(root / MLP.name), 1, sizes=(256, 1024, 1024, 10))
    builders.build_cnn(str(root / CNN.name), 1)
    entries = "".join(
        f'config {{ name: "{m.name}" base_path: "{root / m.name}" model_platform: "tensorflow" }}'
        for m in (HPT, MLP, CNN)
    )
    config = root / "models.config"
    config.write_text(f"model_config_list {{ {entries} }}")
    return str(config)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (proc(5): fields 14 and 15, in ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Served:
    measurement: Measurement
    cores_used: float  # server CPU seconds per wall second over the cell
    cpu_ms_per_request: float


def serve_cell(cell: Cell, server: DataPlaneProcess, seconds: float) -> Served:
    assert server.proc is not None
    pid = server.proc.pid
    message = predict_message(cell.model, cell.rows)
    before, started = cpu_seconds(pid), time.perf_counter()
    if cell.protocol == "grpc":
        m = h2load(server.grpc_target, PREDICT_METHOD, message, cell.clients, cell.rows, seconds)
    else:
        url = f"{server.rest_url}/v1/models/{cell.model.name}:predict"
        body = orjson.dumps({"instances": cell.model.batch(cell.rows).tolist()})
        m = wrk(url, body, cell.clients, cell.rows, seconds)
    cpu, wall = cpu_seconds(pid) - before, time.perf_counter() - started
    # h2load warms up for 1 s before it measures; CPU is counted over its whole run.
    requests = m.examples_per_s / cell.rows * wall
    if not requests:
        raise RuntimeError(f"{cell.label}: no request answered in {seconds} s")
    return Served(m, cpu / wall, cpu / requests * 1e3)


def predict_message(model: Model, rows: int) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.name
    tensors.fill_tensor_proto(request.inputs["x"], model.batch(rows), as_tensor_content=True)
    return request.SerializeToString()


@dataclass(frozen=True)
class Raw:
    one: Measurement
    all_cores: Measurement
    cpu_ms_per_call: float  # with one caller

    @property
    def best(self) -> float:
        return max(self.one.examples_per_s, self.all_cores.examples_per_s)


def raw_call(call: Callable[[], object], rows: int, cores: int, seconds: float) -> Raw:
    before = time.process_time()
    one = closed_loop(call, 1, rows, seconds)
    cpu = time.process_time() - before
    calls = one.examples_per_s / rows * seconds
    return Raw(one, closed_loop(call, cores, rows, seconds), cpu / calls * 1e3)


def median_served(results: Sequence[Served]) -> Served:
    pick = statistics.median_low(r.measurement.examples_per_s for r in results)
    return next(r for r in results if r.measurement.examples_per_s == pick)


def report(cell: Cell, raw: Raw, served: dict[str, Served]) -> list[float]:
    """Print one cell; returns each design's ratio to the best raw call."""
    first = next(iter(served.values())).measurement.examples_per_s
    ratios = []
    for design, s in served.items():
        m = s.measurement
        ratio = m.examples_per_s / raw.best
        ratios.append(ratio)
        line = (
            f"    {design:<7} {m.examples_per_s:>9,.0f} ex/s  p50 {m.p50_ms:7.3f} ms  "
            f"{ratio:4.2f} of best raw  cpu {s.cores_used:4.2f} cores  "
            f"{m.examples_per_s / first:4.2f}x {next(iter(served))}"
        )
        if cell.clients == 1:
            line += (
                f"  p50-raw {m.p50_ms - raw.one.p50_ms:+6.2f} ms  cpu/req "
                f"{s.cpu_ms_per_request:.1f} ms = {s.cpu_ms_per_request / raw.cpu_ms_per_call:.2f}"
                " x raw"
            )
        print(line, flush=True)
    return ratios


def run(args: argparse.Namespace, root: Path) -> None:
    cores = usable_cores()
    config = build_models(root)
    servers = {
        design: start_dataplane(f"--model_config_file={config}", *DESIGNS[design], log_dir=root)
        for design in args.designs
    }
    totals: dict[str, list[float]] = {design: [] for design in args.designs}
    core_use: dict[str, list[float]] = {design: [] for design in args.designs}
    try:
        for cell in (c for c in cells() if c.group in args.cells):
            servable = load_servable(
                cell.model.name, 1, str(root / cell.model.name / "1"), SessionOptions()
            )
            feeds = {"x": cell.model.batch(cell.rows)}
            call = functools.partial(servable.signature("serving_default").run, feeds)
            raw = raw_call(call, cell.rows, cores, args.seconds)
            servable.close()
            print(
                f"{cell.label:<28} raw 1 caller {raw.one.examples_per_s:>9,.0f} ex/s "
                f"(p50 {raw.one.p50_ms:.3f} ms, cpu {raw.cpu_ms_per_call:.2f} ms/call), "
                f"{cores} callers {raw.all_cores.examples_per_s:>9,.0f} ex/s",
                flush=True,
            )
            rounds: dict[str, list[Served]] = {design: [] for design in args.designs}
            for _ in range(args.rounds):
                for design, server in servers.items():
                    rounds[design].append(serve_cell(cell, server, args.seconds))
            served = {design: median_served(results) for design, results in rounds.items()}
            ratios = report(cell, raw, served)
            if cell.protocol == "grpc" and cell.model in (MLP, CNN) and cell.clients > 1:
                for design, ratio in zip(served, ratios, strict=True):
                    totals[design].append(ratio)
                    core_use[design].append(served[design].cores_used)
    finally:
        for server in servers.values():
            server.stop()
    for design in args.designs:
        if totals[design]:
            print(
                f"{design}: gRPC MLP/CNN c=8,32 geomean {geometric_mean(totals[design]):.2f} of "
                f"best raw (target >= 0.5), server cpu median "
                f"{statistics.median(core_use[design]):.2f} cores (target >= 1.4)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    groups = ("mlp", "cnn", "cnn32", "half_plus_two")
    parser.add_argument("--cells", nargs="+", choices=groups, default=list(groups))
    parser.add_argument("--designs", nargs="+", choices=tuple(DESIGNS), default=list(DESIGNS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
