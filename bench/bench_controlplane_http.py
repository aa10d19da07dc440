"""The control plane's API under gunicorn vs the Werkzeug server it replaced (issue 17).

Same app, same database (three models; SQLite, or a throwaway PostgreSQL with --postgres),
same machine and load: wrk sends
`GET /api/v1/models` with a bearer token over keep-alive connections at each concurrency.
Werkzeug runs as `serve` used to (`make_server(..., threaded=True)`: a thread per connection);
gunicorn as `python -m controlplane http` does (gthread, --workers x --threads).

    python bench/bench_controlplane_http.py [--seconds 5] [--workers 2] [--threads 8] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench.harness import Measurement, wrk
from controlplane import store
from controlplane.auth import create_token
from controlplane.revisions import parse_model_config
from tests.controlplane.postgres import running_postgres
from tests.support.controlplane import migrated_database
from tests.support.processes import ServerProcess, quiet_port

CONCURRENCY = (1, 16, 64)
WERKZEUG = """
import sys
from werkzeug.serving import make_server
from controlplane.app import create_app
from controlplane.config import Settings
from dataclasses import replace
app = create_app(replace(Settings.from_env(), run_fleet=False))
make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""


def prepare(database_url: str) -> str:
    """Three models and a token; returns the token."""
    with migrated_database(database_url) as db:
        for name in ("a", "b", "c"):
            config = {"name": name, "base_path": f"/models/{name}"}
            store.create_model(db, parse_model_config(config), "bench")
        return create_token(db, "bench", "read")


@contextmanager
def server(argv: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    process = ServerProcess(argv, [port], log, env, ready_timeout=180).start()
    try:
        yield f"http://127.0.0.1:{port}/api/v1/models"
    finally:
        process.stop(timeout=60)


def wait_serving(url: str, headers: dict[str, str], timeout_s: float = 300) -> None:
    """Until the app answers: gunicorn binds at once, its workers import TensorFlow first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not serving after {timeout_s:g}s")


def measure(url: str, token: str, seconds: float) -> dict[int, Measurement]:
    headers = {"Authorization": f"Bearer {token}"}
    wait_serving(url, headers)
    wrk(url, b"", 8, 1, 5, method="GET", headers=headers)  # every worker booted and warm
    return {c: wrk(url, b"", c, 1, seconds, method="GET", headers=headers) for c in CONCURRENCY}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--postgres", action="store_true", help="instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(running_postgres()).new_database()
        else:
            url = f"sqlite:///{tmp}/bench.db"
        token = prepare(url)
        env = {"DATABASE_URL": url, "MODELPLANE_SECRET_KEY": secrets.token_hex(32)}
        results = {}
        port = quiet_port()
        argv = [sys.executable, "-c", WERKZEUG, str(port)]
        with server(argv, port, env, Path(tmp, "werkzeug.log")) as endpoint:
            results["werkzeug"] = measure(endpoint, token, args.seconds)
        port = quiet_port()
        argv = [sys.executable, "-m", "controlplane", "http", "--port", str(port)]
        argv += ["--workers", str(args.workers), "--threads", str(args.threads)]
        with server(argv, port, env, Path(tmp, "gunicorn.log")) as endpoint:
            results["gunicorn"] = measure(endpoint, token, args.seconds)
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"GET /api/v1/models on {database}, {args.seconds:g}s per point, "
        f"gunicorn {args.workers}x{args.threads}"
    )
    print(f"{'server':<10}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, points in results.items():
        for clients, m in points.items():
            print(
                f"{name:<10}{clients:>8}{m.examples_per_s:>10.0f}{m.p50_ms:>9.2f}{m.p99_ms:>9.2f}"
            )
    for clients in CONCURRENCY:
        ratio = results["gunicorn"][clients].ratio_to(results["werkzeug"][clients])
        print(f"gunicorn / werkzeug at {clients} clients: {ratio:.2f}x")


if __name__ == "__main__":
    main()
