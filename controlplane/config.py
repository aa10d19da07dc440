"""Typed settings for the control plane, read once from the environment.

Every knob lives here so that the app factory, the CLI and the tests share one vocabulary and a
typo in a setting name is an AttributeError instead of a silently ignored dict key.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///var/controlplane.db"


@dataclass(frozen=True)
class LoginThrottle:
    """How many failed sign-ins a client address or a user name gets (see throttle.py).

    `max_failures` within `window_s` blocks the key for `block_s`; each further block of the
    same key lasts twice as long, up to `max_block_s`; a key quiet for `forget_s` starts over.
    """

    max_failures: int = 5
    window_s: float = 60.0
    block_s: float = 60.0
    max_block_s: float = 900.0
    forget_s: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LoginThrottle:
        base = cls()
        return cls(
            max_failures=int(env.get("MODELPLANE_LOGIN_MAX_FAILURES", base.max_failures)),
            window_s=float(env.get("MODELPLANE_LOGIN_WINDOW_S", base.window_s)),
            block_s=float(env.get("MODELPLANE_LOGIN_BLOCK_S", base.block_s)),
            max_block_s=float(env.get("MODELPLANE_LOGIN_MAX_BLOCK_S", base.max_block_s)),
            forget_s=float(env.get("MODELPLANE_LOGIN_FORGET_S", base.forget_s)),
        )


@dataclass(frozen=True)
class HttpOptions:
    """gunicorn's knobs: bounded processes and threads, so slow clients cannot take them all."""

    workers: int = 2
    threads: int = 8
    # gunicorn kills and replaces a worker silent for this long (a wedged request included).
    timeout_s: int = 30
    # On SIGTERM, in-flight requests get this long to finish.
    graceful_timeout_s: int = 30
    # An idle keep-alive connection is closed after this long.
    keepalive_s: int = 5
    # Serve HTTPS directly (both set), else plain HTTP (behind a TLS-terminating proxy).
    cert_file: str = ""
    key_file: str = ""
    # Proxies whose X-Forwarded-Proto is believed (so HTTPS behind them is recognised).
    forwarded_allow_ips: str = "127.0.0.1"


@dataclass(frozen=True)
class PoolOptions:
    """The database connection pool of one process."""

    size: int = 10
    max_overflow: int = 20
    # A request that waits this long for a connection gets 503 instead of hanging.
    timeout_s: float = 5.0
    # PostgreSQL connect timeout: a database that is down answers 503 within this.
    connect_timeout_s: int = 5


@dataclass(frozen=True)
class DataPlaneAuth:
    """File paths and values that secure the calls to data planes (one token per fleet)."""

    token: str = field(default="", repr=False)
    token_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # The name the data planes' certificate carries, when they are dialled by IP (DNS discovery).
    server_name: str = ""


@dataclass(frozen=True)
class TrafficSettings:
    """Where and how often the control plane scrapes the data planes' metrics (traffic.py).

    A plane registered as `host:port` (gRPC) serves its metrics on `host:metrics_port` (its
    REST port) at `metrics_path`; `metrics_urls` names the URL of planes that differ.
    `metrics_port` 0 scrapes only those. The window keeps `span_s` of scrapes per plane.
    With `prometheus_url` the series come from that Prometheus server and nothing is scraped.
    """

    metrics_port: int = 8501
    metrics_path: str = "/monitoring/prometheus/metrics"
    metrics_urls: tuple[tuple[str, str], ...] = ()
    interval_s: float = 15.0
    span_s: float = 3600.0
    max_models: int = 500
    max_bytes: int = 8 << 20
    prometheus_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TrafficSettings:
        base = cls()
        urls = _split_addresses(env.get("MODELPLANE_METRICS_URLS", ""))
        return cls(
            metrics_port=int(env.get("MODELPLANE_METRICS_PORT", base.metrics_port)),
            metrics_path=env.get("MODELPLANE_METRICS_PATH", base.metrics_path),
            metrics_urls=tuple(_pair(item) for item in urls),
            interval_s=float(env.get("MODELPLANE_TRAFFIC_INTERVAL_S", base.interval_s)),
            span_s=float(env.get("MODELPLANE_TRAFFIC_SPAN_S", base.span_s)),
            max_models=int(env.get("MODELPLANE_TRAFFIC_MAX_MODELS", base.max_models)),
            prometheus_url=env.get("MODELPLANE_PROMETHEUS_URL", "").strip(),
        )


@dataclass(frozen=True)
class Settings:
    """Control-plane settings; build with `Settings.from_env()` or directly in tests."""

    database_url: str = DEFAULT_DATABASE_URL
    # Static data planes ("host:port", ...) registered at start.
    dataplanes: tuple[str, ...] = ()
    # "name:port" whose A records are all data planes (a Kubernetes headless Service), or "".
    dataplanes_dns: str = ""
    dns_refresh_s: float = 30.0
    # Seconds between two reconcile passes; a restarted plane is re-pushed within about this long.
    reconcile_interval_s: float = 5.0
    # Deadline of one gRPC call to a data plane, and how many times a push is tried.
    rpc_deadline_s: float = 10.0
    push_attempts: int = 3
    push_backoff_s: float = 0.5
    # How long a label move waits for its target version to become AVAILABLE on every plane.
    label_wait_s: float = 120.0
    # Start the background push/reconcile worker with the app (off in unit tests).
    run_fleet: bool = True
    # Send the session cookie only over HTTPS (set it when the UI is served behind TLS); a
    # request that arrives over HTTPS gets a Secure cookie and HSTS whatever this says.
    secure_cookies: bool = False
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    login_throttle: LoginThrottle = LoginThrottle()
    # Accept a missing/placeholder secret key and the shipped database password (make run only).
    dev_mode: bool = False
    # The HTTP server (gunicorn): processes, threads each, watchdog, drain and keep-alive.
    http: HttpOptions = field(default_factory=lambda: HttpOptions())
    # The connection pool: how many, and how long a request waits for one before a 503.
    pool: PoolOptions = field(default_factory=lambda: PoolOptions())
    # Push results kept per data plane (older ones are deleted as new ones are written).
    push_history_keep: int = 50
    # A revision a plane keeps refusing is retried after base * 2^(failures-1), at most max.
    retry_backoff_s: float = 5.0
    retry_backoff_max_s: float = 300.0
    # How the control plane talks to data planes: admin token and TLS (see client.py).
    dataplane_auth: DataPlaneAuth = field(default_factory=lambda: DataPlaneAuth())
    # Set by `serve` for its HTTP workers: the process whose fleet worker a change wakes.
    fleet_pid: int = 0
    traffic: TrafficSettings = TrafficSettings()
    # Directories under which a model's logging_config may have the data planes write request
    # logs; empty refuses every logging_config (see revisions.check_log_roots).
    request_log_roots: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read MODELPLANE_* and DATABASE_URL; unset variables keep their defaults."""
        env = os.environ if env is None else env
        base = cls()
        return replace(
            base,
            database_url=env.get("DATABASE_URL", base.database_url),
            dataplanes=_split_addresses(env.get("MODELPLANE_DATAPLANES", "")),
            dataplanes_dns=env.get("MODELPLANE_DATAPLANES_DNS", "").strip(),
            dns_refresh_s=float(env.get("MODELPLANE_DNS_REFRESH_S", base.dns_refresh_s)),
            reconcile_interval_s=float(
                env.get("MODELPLANE_RECONCILE_INTERVAL_S", base.reconcile_interval_s)
            ),
            rpc_deadline_s=float(env.get("MODELPLANE_RPC_DEADLINE_S", base.rpc_deadline_s)),
            push_attempts=int(env.get("MODELPLANE_PUSH_ATTEMPTS", base.push_attempts)),
            label_wait_s=float(env.get("MODELPLANE_LABEL_WAIT_S", base.label_wait_s)),
            secure_cookies=_flag(env.get("MODELPLANE_SECURE_COOKIES"), base.secure_cookies),
            login_throttle=LoginThrottle.from_env(env),
            # Empty when unset: startup_checks refuses it outside development mode.
            secret_key=env.get("MODELPLANE_SECRET_KEY", ""),
            dev_mode=_flag(env.get("MODELPLANE_DEV_MODE"), base.dev_mode),
            http=HttpOptions(
                workers=int(env.get("MODELPLANE_HTTP_WORKERS", base.http.workers)),
                threads=int(env.get("MODELPLANE_HTTP_THREADS", base.http.threads)),
                timeout_s=int(env.get("MODELPLANE_HTTP_TIMEOUT_S", base.http.timeout_s)),
                graceful_timeout_s=int(
                    env.get("MODELPLANE_HTTP_GRACEFUL_TIMEOUT_S", base.http.graceful_timeout_s)
                ),
                keepalive_s=int(env.get("MODELPLANE_HTTP_KEEPALIVE_S", base.http.keepalive_s)),
                cert_file=env.get("MODELPLANE_HTTP_CERT_FILE", ""),
                key_file=env.get("MODELPLANE_HTTP_KEY_FILE", ""),
                forwarded_allow_ips=env.get(
                    "MODELPLANE_HTTP_FORWARDED_ALLOW_IPS", base.http.forwarded_allow_ips
                ),
            ),
            pool=PoolOptions(
                size=int(env.get("MODELPLANE_DB_POOL_SIZE", base.pool.size)),
                max_overflow=int(env.get("MODELPLANE_DB_MAX_OVERFLOW", base.pool.max_overflow)),
                timeout_s=float(env.get("MODELPLANE_DB_POOL_TIMEOUT_S", base.pool.timeout_s)),
                connect_timeout_s=int(
                    env.get("MODELPLANE_DB_CONNECT_TIMEOUT_S", base.pool.connect_timeout_s)
                ),
            ),
            push_history_keep=int(env.get("MODELPLANE_PUSH_HISTORY_KEEP", base.push_history_keep)),
            retry_backoff_s=float(env.get("MODELPLANE_RETRY_BACKOFF_S", base.retry_backoff_s)),
            retry_backoff_max_s=float(
                env.get("MODELPLANE_RETRY_BACKOFF_MAX_S", base.retry_backoff_max_s)
            ),
            dataplane_auth=DataPlaneAuth(
                token=env.get("MODELPLANE_DATAPLANE_TOKEN", ""),
                token_file=env.get("MODELPLANE_DATAPLANE_TOKEN_FILE", ""),
                ca_file=env.get("MODELPLANE_DATAPLANE_CA_FILE", ""),
                cert_file=env.get("MODELPLANE_DATAPLANE_CERT_FILE", ""),
                key_file=env.get("MODELPLANE_DATAPLANE_KEY_FILE", ""),
                server_name=env.get("MODELPLANE_DATAPLANE_TLS_SERVER_NAME", ""),
            ),
            fleet_pid=int(env.get("MODELPLANE_FLEET_PID", base.fleet_pid)),
            traffic=TrafficSettings.from_env(env),
            request_log_roots=_log_roots(env.get("MODELPLANE_REQUEST_LOG_ROOTS", "")),
        )

    @property
    def lease_s(self) -> float:
        """How long a push claims a data plane: longer than any single call it makes."""
        return self.rpc_deadline_s * 2 + 5.0


def _flag(value: str | None, default: bool) -> bool:
    """An on/off variable: 1, true or yes (any case) is on; unset keeps the default."""
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes")


def _split_addresses(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _log_roots(value: str) -> tuple[str, ...]:
    """MODELPLANE_REQUEST_LOG_ROOTS: absolute, normalized directories, comma-separated."""
    roots = _split_addresses(value)
    for root in roots:
        if not root.startswith("/") or os.path.normpath(root) != root.rstrip("/") or root == "/":
            raise ValueError(f"MODELPLANE_REQUEST_LOG_ROOTS: {root!r} must be a plain directory")
    return roots


def _pair(item: str) -> tuple[str, str]:
    """`address=url` of MODELPLANE_METRICS_URLS."""
    address, sep, url = item.partition("=")
    if not sep or not address.strip() or not url.strip():
        raise ValueError(f"MODELPLANE_METRICS_URLS: expected address=url, got {item!r}")
    return address.strip(), url.strip()


def ensure_sqlite_dir(database_url: str) -> None:
    """Create the directory of a relative or absolute SQLite file so the default URL just works."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and ":memory:" not in database_url:
        Path(database_url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
