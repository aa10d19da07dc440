"""Settings come from the environment once, typed."""

from __future__ import annotations

import pytest

from controlplane.config import (
    DEFAULT_DATABASE_URL,
    DataPlaneAuth,
    HttpOptions,
    LoginThrottle,
    PoolOptions,
    Settings,
    TrafficSettings,
)
from controlplane.db import normalize_url


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.dataplanes == ()
    assert settings.dataplanes_dns == ""
    assert settings.reconcile_interval_s == 5.0
    assert settings.run_fleet is True
    assert settings.secure_cookies is False
    assert settings.lease_s > settings.rpc_deadline_s


def test_environment_overrides():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "MODELPLANE_DATAPLANES": " a:1, b:2 ,,",
            "MODELPLANE_DATAPLANES_DNS": "svc.ns:8500",
            "MODELPLANE_RECONCILE_INTERVAL_S": "2.5",
            "MODELPLANE_PUSH_ATTEMPTS": "5",
            "MODELPLANE_SECRET_KEY": "s3cr3t-value",
            "MODELPLANE_SECURE_COOKIES": " True ",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.dataplanes == ("a:1", "b:2")
    assert settings.dataplanes_dns == "svc.ns:8500"
    assert settings.reconcile_interval_s == 2.5
    assert settings.push_attempts == 5
    assert settings.secret_key == "s3cr3t-value"
    assert settings.secure_cookies is True
    assert "s3cr3t-value" not in repr(settings)


def test_plain_postgresql_urls_use_psycopg3():
    assert normalize_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalize_url("sqlite:///var/x.db") == "sqlite:///var/x.db"


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("yes", True), ("0", False), ("", False)]
)
def test_secure_cookies_is_an_on_off_variable(value: str, expected: bool):
    settings = Settings.from_env({"MODELPLANE_SECURE_COOKIES": value})
    assert settings.secure_cookies is expected


def test_traffic_settings_from_the_environment():
    assert Settings.from_env({}).traffic == TrafficSettings()
    traffic = Settings.from_env(
        {
            "MODELPLANE_METRICS_PORT": "9000",
            "MODELPLANE_METRICS_PATH": "/metrics",
            "MODELPLANE_METRICS_URLS": "a:1=http://a:2/m, b:1=https://b/m",
            "MODELPLANE_TRAFFIC_INTERVAL_S": "5",
            "MODELPLANE_TRAFFIC_SPAN_S": "600",
            "MODELPLANE_TRAFFIC_MAX_MODELS": "20",
        }
    ).traffic
    assert traffic == TrafficSettings(
        metrics_port=9000,
        metrics_path="/metrics",
        metrics_urls=(("a:1", "http://a:2/m"), ("b:1", "https://b/m")),
        interval_s=5.0,
        span_s=600.0,
        max_models=20,
    )
    with pytest.raises(ValueError, match="expected address=url"):
        Settings.from_env({"MODELPLANE_METRICS_URLS": "a:1"})


def test_request_log_roots_are_plain_absolute_directories():
    assert Settings.from_env({}).request_log_roots == ()
    roots = Settings.from_env({"MODELPLANE_REQUEST_LOG_ROOTS": "/var/log/mp, /data/logs/"})
    assert roots.request_log_roots == ("/var/log/mp", "/data/logs/")
    for bad in ("logs", "/", "/var/log/../etc", "/var//log"):
        with pytest.raises(ValueError, match="must be a plain directory"):
            Settings.from_env({"MODELPLANE_REQUEST_LOG_ROOTS": bad})


def test_nested_settings_read_their_own_variables_and_keep_the_other_defaults():
    settings = Settings.from_env(
        {
            "MODELPLANE_LOGIN_MAX_FAILURES": "7",
            "MODELPLANE_HTTP_WORKERS": "4",
            "MODELPLANE_HTTP_CERT_FILE": "/tls/c.pem",
            "MODELPLANE_DB_POOL_TIMEOUT_S": "1.5",
            "MODELPLANE_DATAPLANE_TOKEN": "plane-token",
            "MODELPLANE_DATAPLANE_TLS_SERVER_NAME": "planes.local",
            "MODELPLANE_FLEET_PID": "4242",
            "MODELPLANE_DEV_MODE": "yes",
        }
    )
    assert settings.login_throttle == LoginThrottle(max_failures=7)
    assert settings.http == HttpOptions(workers=4, cert_file="/tls/c.pem")
    assert settings.pool == PoolOptions(timeout_s=1.5)
    assert settings.dataplane_auth == DataPlaneAuth(token="plane-token", server_name="planes.local")
    assert (settings.fleet_pid, settings.dev_mode) == (4242, True)
    assert "plane-token" not in repr(settings)


def test_secret_key_is_empty_when_unset_so_startup_checks_can_refuse_it():
    assert Settings.from_env({}).secret_key == ""
    assert len(Settings().secret_key) == 64  # built directly (tests): a random one


def test_a_variable_that_does_not_parse_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"^MODELPLANE_HTTP_WORKERS: invalid literal"):
        Settings.from_env({"MODELPLANE_HTTP_WORKERS": "two"})
