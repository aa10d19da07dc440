"""Refusing shipped or weak secrets: the rules, and the CLI's one line and exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from controlplane.config import Settings
from controlplane.startup_checks import UnsafeSettings, checked, secret_key_problem
from tests.support.processes import REPO_ROOT

GOOD_KEY = "9f" * 32
GOOD_URL = "postgresql://modelplane:Zq8v2-real-password@db:5432/modelplane"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "MODELPLANE_SECRET_KEY is not set"),
        ("change-me-to-64-random-hex-characters", "is a placeholder"),
        ("CHANGE_ME" + "x" * 40, "is a placeholder"),
        ("x" * 31, "shorter than 32 bytes"),
        ("é" * 16, None),  # 32 bytes in UTF-8
        (GOOD_KEY, None),
    ],
)
def test_secret_key_rules(key: str, problem: str | None):
    found = secret_key_problem(key)
    assert found == problem if problem is None else problem in found


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://modelplane:modelplane@postgres:5432/modelplane",
        "postgresql://modelplane:change-me@postgres:5432/modelplane",
    ],
)
def test_the_shipped_database_passwords_are_refused(url: str):
    with pytest.raises(UnsafeSettings, match="placeholder password"):
        checked(Settings(database_url=url, secret_key=GOOD_KEY))


def test_real_values_pass_unchanged():
    settings = Settings(database_url=GOOD_URL, secret_key=GOOD_KEY)
    assert checked(settings) is settings
    sqlite = Settings(database_url="sqlite:///var/x.db", secret_key=GOOD_KEY)
    assert checked(sqlite) is sqlite


def test_development_mode_accepts_both_and_makes_up_a_key():
    url = "postgresql://modelplane:modelplane@postgres:5432/modelplane"
    settings = checked(Settings(database_url=url, secret_key="", dev_mode=True))
    assert len(bytes.fromhex(settings.secret_key)) == 32
    assert settings.database_url == url
    kept = checked(Settings(secret_key=GOOD_KEY, dev_mode=True))
    assert kept.secret_key == GOOD_KEY


@pytest.mark.parametrize("command", ["serve", "http", "fleet"])
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "MODELPLANE_SECRET_KEY is not set"),
        ({"MODELPLANE_SECRET_KEY": "change-me-to-64-random-hex-characters"}, "placeholder"),
        (
            {
                "MODELPLANE_SECRET_KEY": GOOD_KEY,
                "DATABASE_URL": "postgresql://modelplane:modelplane@127.0.0.1:1/modelplane",
            },
            "DATABASE_URL uses a placeholder password",
        ),
        (
            {"MODELPLANE_SECRET_KEY": GOOD_KEY, "MODELPLANE_DATAPLANE_TOKEN_FILE": "/nonexistent"},
            "MODELPLANE_DATAPLANE_TOKEN_FILE: cannot read /nonexistent",
        ),
        (
            {"MODELPLANE_SECRET_KEY": GOOD_KEY, "MODELPLANE_HTTP_WORKERS": "two"},
            "MODELPLANE_HTTP_WORKERS: invalid literal for int()",
        ),
    ],
)
def test_the_cli_refuses_with_one_line_and_exit_code_2(command, env, expected, tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    clean["DATABASE_URL"] = f"sqlite:///{tmp_path / 'cp.db'}"
    argv = [sys.executable, "-m", "controlplane", command]
    argv += [] if command == "fleet" else ["--port", "1"]
    start = time.monotonic()
    result = subprocess.run(
        argv, cwd=REPO_ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert time.monotonic() - start < 30  # before TensorFlow or gunicorn are even imported
