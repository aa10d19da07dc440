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
    # Send the session cookie only over HTTPS (set it when the UI is served behind TLS).
    secure_cookies: bool = False
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    login_throttle: LoginThrottle = LoginThrottle()
    traffic: TrafficSettings = TrafficSettings()

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
            secret_key=env.get("MODELPLANE_SECRET_KEY", base.secret_key),
            login_throttle=LoginThrottle.from_env(env),
            traffic=TrafficSettings.from_env(env),
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
