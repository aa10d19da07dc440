"""How many sign-in attempts per minute get their password checked, under the login throttle.

A real control plane (`python -m controlplane serve`, SQLite, the default throttle policy)
and two guessers running at once for `--seconds`, each as fast as `--clients` concurrent
clients can go:
- **one address**: every guess from 127.0.0.1, a different user name each time (the address
  key is what stops it);
- **one user name**: every guess for `alice`, from a different loopback address each time
  (127.0.1.x, one of `--addresses`; the user-name key is what stops it).

An attempt "gets through" when the server checked its password (401); a throttled one is 429
and costs no scrypt. Printed per minute for both guessers, then the same for a short run with
the throttle effectively off (`MODELPLANE_LOGIN_MAX_FAILURES` huge), i.e. what one client got
through before the throttle.

    python bench/bench_login_throttle.py [--seconds 180] [--unthrottled_seconds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
from requests.adapters import HTTPAdapter

from tests.support.processes import REPO_ROOT, ServerProcess, free_port

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ADMIN, PASSWORD = "alice", "correct horse battery"


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a given local address: each loopback address is a distinct client."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


@dataclass
class Guesser:
    """Wrong guesses back to back from `clients` threads; `outcomes[minute][status]` counts
    the answers. `user(n)` names the user name of guess n."""

    url: str
    sources: list[str]
    user: Callable[[int], str]
    clients: int
    outcomes: dict[int, Counter[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self, source: str) -> tuple[requests.Session, str]:
        http = requests.Session()
        http.mount("http://", SourceAddressAdapter(source))
        token = CSRF_RE.search(http.get(f"{self.url}/login", timeout=30).text).group(1)
        return http, token

    def run(self, seconds: float) -> None:
        threads = [
            threading.Thread(target=self.client, args=(c, seconds)) for c in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def client(self, c: int, seconds: float) -> None:
        sessions = [self.session(source) for source in self.sources]
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            http, token = sessions[n % len(sessions)]
            guess = n * self.clients + c
            data = {"username": self.user(guess), "password": f"guess {guess}", "csrf_token": token}
            status = http.post(f"{self.url}/login", data=data, timeout=30).status_code
            with self.lock:
                self.outcomes.setdefault(int(elapsed // 60), Counter())[status] += 1
            n += 1


@contextmanager
def control_plane(workdir: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'controlplane.db'}",
        "MODELPLANE_SECRET_KEY": "bench-login-throttle-" + "x" * 40,
        **env,
    }
    cli = [sys.executable, "-m", "controlplane"]
    subprocess.run([*cli, "db", "upgrade"], cwd=REPO_ROOT, env=env, check=True)
    create = [*cli, "create-admin", "--username", ADMIN, "--password-stdin"]
    subprocess.run(create, cwd=REPO_ROOT, env=env, input=PASSWORD + "\n", text=True, check=True)
    serve = [*cli, "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(serve, [port], workdir / "controlplane.log", env)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def measure(
    seconds: float, addresses: int, clients: int, env: dict[str, str]
) -> tuple[Guesser, Guesser]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-login-") as tmp,
        control_plane(Path(tmp), env) as url,
    ):
        one_address = Guesser(url, ["127.0.0.1"], lambda n: f"user{n}", clients)
        sources = [f"127.0.1.{n}" for n in range(1, addresses + 1)]
        one_user = Guesser(url, sources, lambda _n: ADMIN, clients)
        threads = [threading.Thread(target=g.run, args=(seconds,)) for g in (one_address, one_user)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return one_address, one_user


def report(title: str, guessers: tuple[Guesser, Guesser], seconds: float) -> None:
    print(f"\n{title}")
    for name, guesser in zip(("one address", "one user name"), guessers, strict=True):
        minutes = sorted(guesser.outcomes)
        per_minute = [
            f"min {m + 1}: {guesser.outcomes[m][401]} checked / {guesser.outcomes[m][429]} x 429"
            for m in minutes
        ]
        checked = sum(c[401] for c in guesser.outcomes.values())
        rate = checked / seconds * 60
        print(f"  {name:14s} {checked:5d} checked in {seconds:.0f} s ({rate:.1f}/min)")
        print("                 " + "; ".join(per_minute))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--unthrottled_seconds", type=float, default=20.0)
    parser.add_argument("--addresses", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients per guesser")
    args = parser.parse_args()
    throttled = measure(args.seconds, args.addresses, args.clients, {})
    report(
        "throttled (default policy: 5 failures/min, blocks 60 s doubling to 15 min)",
        throttled,
        args.seconds,
    )
    if args.unthrottled_seconds > 0:
        off = {"MODELPLANE_LOGIN_MAX_FAILURES": str(10**9)}
        before = measure(args.unthrottled_seconds, args.addresses, args.clients, off)
        report("throttle off (what got through before)", before, args.unthrottled_seconds)


if __name__ == "__main__":
    main()
