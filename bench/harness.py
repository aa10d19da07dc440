"""Shared measurement tools for the benchmarks: closed-loop raw calls, wrk and h2load.

Load comes from C load generators (wrk for HTTP/1.1, h2load for gRPC over HTTP/2) so the
client does not eat the 2 cores the server is measured on; the raw model call is measured
in-process with the same concurrency in the same run, and every figure is printed as a ratio
against it.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    """Closed-loop result: examples per second and request latency percentiles (ms)."""

    examples_per_s: float
    p50_ms: float
    p99_ms: float

    def ratio_to(self, raw: Measurement) -> float:
        return self.examples_per_s / raw.examples_per_s


def percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def closed_loop(
    call: Callable[[], object], concurrency: int, batch: int, seconds: float
) -> Measurement:
    """Run `call` back to back from `concurrency` threads for `seconds`; time each call."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds

    def worker(out: list[float]) -> None:
        while (start := time.perf_counter()) < deadline:
            call()
            out.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(out,)) for out in latencies]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    merged = sorted(v for out in latencies for v in out)
    return Measurement(
        len(merged) * batch / elapsed, percentile(merged, 0.5) * 1e3, percentile(merged, 0.99) * 1e3
    )


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found: install Debian's {package} (make bench does)")
    return path


_WRK_SCRIPT = """
wrk.method = "{method}"
{headers}
local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()
if wrk.body == "" then wrk.body = nil end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %f %f %f\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(
    url: str,
    body: bytes,
    concurrency: int,
    batch: int,
    seconds: float,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
) -> Measurement:
    """HTTP/1.1 keep-alive closed loop with `concurrency` connections on one wrk thread."""
    tool = require_tool("wrk", "wrk")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in all_headers.items())
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp, "body.json")
        body_path.write_bytes(body)
        script = Path(tmp, "request.lua")
        script.write_text(_WRK_SCRIPT.format(body=body_path, method=method, headers=header_lines))
        out = subprocess.run(
            [
                tool,
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    match = re.search(r"RESULT (\d+) (\S+) (\S+) (\S+)", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests, duration_us, p50_us, p99_us = (float(g) for g in match.groups())
    return Measurement(requests * batch / (duration_us / 1e6), p50_us / 1e3, p99_us / 1e3)


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed), as h2load must send it."""
    return struct.pack(">?I", False, len(message)) + message


def h2load(
    target: str, method: str, message: bytes, concurrency: int, batch: int, seconds: float
) -> Measurement:
    """gRPC unary calls over h2c, `concurrency` connections x 1 stream, per-request log."""
    tool = require_tool("h2load", "nghttp2-client")
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp, "body.bin")
        body.write_bytes(grpc_frame(message))
        log = Path(tmp, "requests.log")
        subprocess.run(
            [
                tool,
                f"-c{concurrency}",
                "-m1",
                "-t1",
                f"-D{max(1, round(seconds))}",
                "--warm-up-time=1",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-d",
                str(body),
                f"--log-file={log}",
                f"http://{target}{method}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        logged = [line.split("\t") for line in log.read_text().splitlines() if line]
    # Status 0: no answer yet when the run's time was up (at most one per connection); a
    # server whose answers take longer has some in flight then, which is not a failure.
    rows = [row for row in logged if row[1] != "0"]
    cut_off = len(logged) - len(rows)
    if not rows or cut_off > concurrency or any(status != "200" for _, status, _ in rows):
        raise RuntimeError("h2load saw failed or no requests")
    starts = [int(start) for start, _, _ in rows]
    durations = sorted(int(d) / 1e3 for _, _, d in rows)
    span_s = (max(starts) - min(starts)) / 1e6 or seconds
    return Measurement(
        len(rows) * batch / span_s, percentile(durations, 0.5), percentile(durations, 0.99)
    )


def add_dataplane_flag_option(parser: argparse.ArgumentParser) -> None:
    """`--dataplane_flag`, repeatable: extra flags for the data plane under test, so one script
    compares server settings (e.g. --grpc_dispatcher_spin_micros=0) without being edited."""
    parser.add_argument(
        "--dataplane_flag", action="append", default=[], help="extra data-plane flag (repeatable)"
    )
