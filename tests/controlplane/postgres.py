"""A throwaway PostgreSQL cluster for tests, made with Debian's binaries.

initdb into a temp dir, `postgres` on a free 127.0.0.1 port with durability off (tests do not
need it and it is much faster), one fresh database per test. As root the server runs as the
`postgres` user, because PostgreSQL refuses to run as root. apt-get installs it when missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port, log_tail


@dataclass(frozen=True)
class PostgresServer:
    port: int
    admin_url: str

    def new_database(self) -> str:
        """CREATE DATABASE with a unique name; returns its SQLAlchemy URL."""
        import psycopg

        name = f"cp_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


def _as_postgres_user() -> dict[str, str]:
    """Popen arguments that drop to the `postgres` user when we are root (it refuses root)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@contextmanager
def running_postgres(port: int | None = None) -> Iterator[PostgresServer]:
    """A server on `port` (default: a free one); a given port lets a test start its app while
    nothing listens there yet."""
    bindir = _postgres_bin()
    datadir = Path(tempfile.mkdtemp(prefix="cp-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(datadir, entry.pw_uid, entry.pw_gid)
    data = str(datadir / "data")
    initdb = [str(bindir / "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"]
    subprocess.run(initdb, check=True, capture_output=True, **_as_postgres_user())
    port = port or free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    argv = [str(bindir / "postgres"), "-D", data, "-p", str(port), "-k", str(datadir)]
    argv += [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
    log_path = datadir / "postgres.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **_as_postgres_user())
    server = PostgresServer(port, f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        _wait_for_postgres(server, proc, log_path)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: do not wait for idle pool sessions
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(datadir, ignore_errors=True)


def _wait_for_postgres(server: PostgresServer, proc: subprocess.Popen, log_path: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(server.admin_url, connect_timeout=1).close()
            return
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{log_tail(log_path)}") from None
            time.sleep(0.1)
