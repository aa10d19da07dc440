"""Typed settings for the control plane, read once from the environment.

Every knob lives here so that the app factory, the CLI and the tests share one vocabulary and a
typo in a setting name is an AttributeError instead of a silently ignored dict key.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from dataplane import json_logs

DEFAULT_DATABASE_URL = "sqlite:///var/controlplane.db"
T = TypeVar("T")


def env_field(
    variable: str, default: Any, *, parse: Callable[[str], Any] | None = None, **kw: Any
) -> Any:
    """A setting read from `variable` by `read_env`: with `parse`, else converted like the
    field's type (int, float, str, or an on/off bool)."""
    return field(default=default, metadata={"env": variable, "parse": parse}, **kw)


def read_env(cls: type[T], env: Mapping[str, str]) -> T:
    """An instance of the settings dataclass `cls` from `env`: each field that names a variable
    takes its value when set, each settings dataclass field is read the same way, the rest keep
    their defaults. One reader, so that a setting is declared once, beside its default."""
    types = get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in fields(cls):  # type: ignore[arg-type]
        kind = types[item.name]
        variable = item.metadata.get("env")
        if is_dataclass(kind):
            values[item.name] = read_env(kind, env)  # type: ignore[arg-type]
        elif variable is not None and variable in env:
            values[item.name] = _parse(item.metadata.get("parse") or _PARSERS[kind], variable, env)
        elif "unset" in item.metadata:
            values[item.name] = item.metadata["unset"]
    return cls(**values)


def _parse(parse: Callable[[str], Any], variable: str, env: Mapping[str, str]) -> Any:
    """The variable's value, or a ValueError that names it (the CLI prints it and exits 2)."""
    try:
        return parse(env[variable])
    except ValueError as err:
        raise ValueError(f"{variable}: {err}") from err


def variables(cls: type) -> set[str]:
    """Every environment variable `read_env(cls, ...)` reads (the operations doc lists them)."""
    types = get_type_hints(cls)
    names: set[str] = set()
    for item in fields(cls):
        kind = types[item.name]
        names |= variables(kind) if is_dataclass(kind) else {item.metadata.get("env", "")}
    return names - {""}


def _flag(value: str) -> bool:
    """An on/off variable: 1, true or yes (any case) is on."""
    return value.strip().lower() in ("1", "true", "yes")


def _split_addresses(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _address_urls(value: str) -> tuple[tuple[str, str], ...]:
    return tuple(_pair(item) for item in _split_addresses(value))


def _log_roots(value: str) -> tuple[str, ...]:
    """MODELPLANE_REQUEST_LOG_ROOTS: absolute, normalized directories, comma-separated."""
    roots = _split_addresses(value)
    for root in roots:
        if not root.startswith("/") or os.path.normpath(root) != root.rstrip("/") or root == "/":
            raise ValueError(f"{root!r} must be a plain directory")
    return roots


def _pair(item: str) -> tuple[str, str]:
    """`address=url` of MODELPLANE_METRICS_URLS."""
    address, sep, url = item.partition("=")
    if not sep or not address.strip() or not url.strip():
        raise ValueError(f"MODELPLANE_METRICS_URLS: expected address=url, got {item!r}")
    return address.strip(), url.strip()


_PARSERS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, bool: _flag}


@dataclass(frozen=True)
class LoginThrottle:
    """How many failed sign-ins a client address or a user name gets (see throttle.py).

    `max_failures` within `window_s` blocks the key for `block_s`; each further block of the
    same key lasts twice as long, up to `max_block_s`; a key quiet for `forget_s` starts over.
    """

    max_failures: int = env_field("MODELPLANE_LOGIN_MAX_FAILURES", 5)
    window_s: float = env_field("MODELPLANE_LOGIN_WINDOW_S", 60.0)
    block_s: float = env_field("MODELPLANE_LOGIN_BLOCK_S", 60.0)
    max_block_s: float = env_field("MODELPLANE_LOGIN_MAX_BLOCK_S", 900.0)
    forget_s: float = env_field("MODELPLANE_LOGIN_FORGET_S", 3600.0)


@dataclass(frozen=True)
class HttpOptions:
    """gunicorn's knobs: bounded processes and threads, so slow clients cannot take them all."""

    workers: int = env_field("MODELPLANE_HTTP_WORKERS", 2)
    threads: int = env_field("MODELPLANE_HTTP_THREADS", 8)
    # gunicorn kills and replaces a worker silent for this long (a wedged request included).
    timeout_s: int = env_field("MODELPLANE_HTTP_TIMEOUT_S", 30)
    # On SIGTERM, in-flight requests get this long to finish.
    graceful_timeout_s: int = env_field("MODELPLANE_HTTP_GRACEFUL_TIMEOUT_S", 30)
    # An idle keep-alive connection is closed after this long.
    keepalive_s: int = env_field("MODELPLANE_HTTP_KEEPALIVE_S", 5)
    # Serve HTTPS directly (both set), else plain HTTP (behind a TLS-terminating proxy).
    cert_file: str = env_field("MODELPLANE_HTTP_CERT_FILE", "")
    key_file: str = env_field("MODELPLANE_HTTP_KEY_FILE", "")
    # Proxies whose X-Forwarded-Proto is believed (so HTTPS behind them is recognised).
    forwarded_allow_ips: str = env_field("MODELPLANE_HTTP_FORWARDED_ALLOW_IPS", "127.0.0.1")


@dataclass(frozen=True)
class PoolOptions:
    """The database connection pool of one process."""

    size: int = env_field("MODELPLANE_DB_POOL_SIZE", 10)
    max_overflow: int = env_field("MODELPLANE_DB_MAX_OVERFLOW", 20)
    # A request that waits this long for a connection gets 503 instead of hanging.
    timeout_s: float = env_field("MODELPLANE_DB_POOL_TIMEOUT_S", 5.0)
    # PostgreSQL connect timeout: a database that is down answers 503 within this.
    connect_timeout_s: int = env_field("MODELPLANE_DB_CONNECT_TIMEOUT_S", 5)


@dataclass(frozen=True)
class DataPlaneAuth:
    """File paths and values that secure the calls to data planes (one token per fleet)."""

    token: str = env_field("MODELPLANE_DATAPLANE_TOKEN", "", repr=False)
    token_file: str = env_field("MODELPLANE_DATAPLANE_TOKEN_FILE", "")
    ca_file: str = env_field("MODELPLANE_DATAPLANE_CA_FILE", "")
    cert_file: str = env_field("MODELPLANE_DATAPLANE_CERT_FILE", "")
    key_file: str = env_field("MODELPLANE_DATAPLANE_KEY_FILE", "")
    # The name the data planes' certificate carries, when they are dialled by IP (DNS discovery).
    server_name: str = env_field("MODELPLANE_DATAPLANE_TLS_SERVER_NAME", "")


@dataclass(frozen=True)
class TrafficSettings:
    """Where and how often the control plane scrapes the data planes' metrics (traffic.py).

    A plane registered as `host:port` (gRPC) serves its metrics on `host:metrics_port` (its
    REST port) at `metrics_path`; `metrics_urls` names the URL of planes that differ.
    `metrics_port` 0 scrapes only those. The window keeps `span_s` of scrapes per plane.
    With `prometheus_url` the series come from that Prometheus server and nothing is scraped.
    """

    metrics_port: int = env_field("MODELPLANE_METRICS_PORT", 8501)
    metrics_path: str = env_field("MODELPLANE_METRICS_PATH", "/monitoring/prometheus/metrics")
    metrics_urls: tuple[tuple[str, str], ...] = env_field(
        "MODELPLANE_METRICS_URLS", (), parse=_address_urls
    )
    interval_s: float = env_field("MODELPLANE_TRAFFIC_INTERVAL_S", 15.0)
    span_s: float = env_field("MODELPLANE_TRAFFIC_SPAN_S", 3600.0)
    max_models: int = env_field("MODELPLANE_TRAFFIC_MAX_MODELS", 500)
    max_bytes: int = 8 << 20
    prometheus_url: str = env_field("MODELPLANE_PROMETHEUS_URL", "", parse=str.strip)


@dataclass(frozen=True)
class Settings:
    """Control-plane settings; build with `Settings.from_env()` or directly in tests."""

    database_url: str = env_field("DATABASE_URL", DEFAULT_DATABASE_URL)
    # Static data planes ("host:port", ...) registered at start.
    dataplanes: tuple[str, ...] = env_field("MODELPLANE_DATAPLANES", (), parse=_split_addresses)
    # "name:port" whose A records are all data planes (a Kubernetes headless Service), or "".
    dataplanes_dns: str = env_field("MODELPLANE_DATAPLANES_DNS", "", parse=str.strip)
    dns_refresh_s: float = env_field("MODELPLANE_DNS_REFRESH_S", 30.0)
    # Seconds between two reconcile passes; a restarted plane is re-pushed within about this long.
    reconcile_interval_s: float = env_field("MODELPLANE_RECONCILE_INTERVAL_S", 5.0)
    # Deadline of one gRPC call to a data plane, and how many times a push is tried.
    rpc_deadline_s: float = env_field("MODELPLANE_RPC_DEADLINE_S", 10.0)
    push_attempts: int = env_field("MODELPLANE_PUSH_ATTEMPTS", 3)
    push_backoff_s: float = 0.5
    # How long a label move waits for its target version to become AVAILABLE on every plane.
    label_wait_s: float = env_field("MODELPLANE_LABEL_WAIT_S", 120.0)
    # Start the background push/reconcile worker with the app (off in unit tests).
    run_fleet: bool = True
    # Send the session cookie only over HTTPS (set it when the UI is served behind TLS); a
    # request that arrives over HTTPS gets a Secure cookie and HSTS whatever this says.
    secure_cookies: bool = env_field("MODELPLANE_SECURE_COOKIES", False)
    # from_env leaves it empty when unset: startup_checks refuses that outside development mode.
    secret_key: str = field(
        default_factory=lambda: secrets.token_hex(32),
        repr=False,
        metadata={"env": "MODELPLANE_SECRET_KEY", "unset": ""},
    )
    login_throttle: LoginThrottle = LoginThrottle()
    # Accept a missing/placeholder secret key and the shipped database password (make run only).
    dev_mode: bool = env_field("MODELPLANE_DEV_MODE", False)
    # The HTTP server (gunicorn): processes, threads each, watchdog, drain and keep-alive.
    http: HttpOptions = field(default_factory=lambda: HttpOptions())
    # The connection pool: how many, and how long a request waits for one before a 503.
    pool: PoolOptions = field(default_factory=lambda: PoolOptions())
    # Push results kept per data plane (older ones are deleted as new ones are written).
    push_history_keep: int = env_field("MODELPLANE_PUSH_HISTORY_KEEP", 50)
    # A revision a plane keeps refusing is retried after base * 2^(failures-1), at most max.
    retry_backoff_s: float = env_field("MODELPLANE_RETRY_BACKOFF_S", 5.0)
    retry_backoff_max_s: float = env_field("MODELPLANE_RETRY_BACKOFF_MAX_S", 300.0)
    # How the control plane talks to data planes: admin token and TLS (see client.py).
    dataplane_auth: DataPlaneAuth = field(default_factory=lambda: DataPlaneAuth())
    # Set by `serve` for its HTTP workers: the process whose fleet worker a change wakes.
    fleet_pid: int = env_field("MODELPLANE_FLEET_PID", 0)
    traffic: TrafficSettings = TrafficSettings()
    # Directories under which a model's logging_config may have the data planes write request
    # logs; empty refuses every logging_config (see revisions.check_log_roots).
    # `text` or `json` (JSON lines with request ids, dataplane/json_logs.py), both planes alike.
    log_format: str = env_field(
        "MODELPLANE_LOG_FORMAT", json_logs.TEXT, parse=json_logs.chosen_format
    )
    request_log_roots: tuple[str, ...] = env_field(
        "MODELPLANE_REQUEST_LOG_ROOTS", (), parse=_log_roots
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read MODELPLANE_* and DATABASE_URL; unset variables keep their defaults."""
        return read_env(cls, os.environ if env is None else env)

    @property
    def lease_s(self) -> float:
        """How long a push claims a data plane: longer than any single call it makes."""
        return self.rpc_deadline_s * 2 + 5.0


def ensure_sqlite_dir(database_url: str) -> None:
    """Create the directory of a relative or absolute SQLite file so the default URL just works."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and ":memory:" not in database_url:
        Path(database_url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
