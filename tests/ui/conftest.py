"""Fixtures for the admin UI: an in-process app for fast view tests, and for browser tests a
real control-plane process (admin created with the CLI) driven by Debian's headless Chromium.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controlplane.auth import create_admin
from controlplane.config import Settings
from controlplane.db import Database
from tests.e2e.conftest import ControlPlaneProcess
from tests.support.controlplane import migrated_database, running_app
from tests.support.processes import REPO_ROOT

ADMIN = "alice"
PASSWORD = "correct horse battery"
SECRET_KEY = "ui-test-secret-key-that-must-never-be-rendered"
# The directory request logs may be configured under (nothing is written in UI tests).
LOG_ROOT = "/var/log/modelplane"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """The CSRF token a rendered form carries."""
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


# -- in-process app (fast view tests) ---------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with migrated_database(f"sqlite:///{tmp_path / 'ui.db'}") as database:
        yield database


@pytest.fixture
def app(db: Database) -> Iterator[Flask]:
    """The real app factory, without the background pusher (views only notify it)."""
    settings = Settings(
        database_url=db.url,
        run_fleet=False,
        secret_key=SECRET_KEY,
        request_log_roots=(LOG_ROOT,),
    )
    with running_app(settings) as application:
        yield application


@pytest.fixture
def admin(db: Database) -> str:
    return create_admin(db, ADMIN, PASSWORD).label


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """An anonymous browser."""
    return app.test_client()


@pytest.fixture
def signed_in(app: Flask, admin: str) -> FlaskClient:
    """A browser with an admin session, signed in through the login form."""
    browser = app.test_client()
    token = csrf_token(browser.get("/login").get_data(as_text=True))
    response = browser.post(
        "/login", data={"username": ADMIN, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return browser


# -- a real control plane and a real browser --------------------------------------------------


class UIControlPlane(ControlPlaneProcess):
    """The e2e control-plane process plus an admin made with `create-admin --password-stdin`,
    reconciling every second so the UI shows state changes quickly."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        super().__init__(database_url, [], log_dir)
        self.env["MODELPLANE_RECONCILE_INTERVAL_S"] = "1"
        self.env["MODELPLANE_SECRET_KEY"] = SECRET_KEY
        self.env["MODELPLANE_REQUEST_LOG_ROOTS"] = LOG_ROOT

    def create_admin(self, username: str, password: str) -> None:
        command = ["create-admin", "--username", username, "--password-stdin"]
        subprocess.run(
            [sys.executable, "-m", "controlplane", *command],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            input=password + "\n",
            capture_output=True,
            text=True,
            check=True,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIControlPlane]:
    logs = tmp_path_factory.mktemp("ui-controlplane")
    control = UIControlPlane(f"sqlite:///{logs / 'controlplane.db'}", logs)
    control.prepare()
    control.create_admin(ADMIN, PASSWORD)
    control.start()
    yield control
    control.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install it: apt-get install -y chromium (make system-deps)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server: UIControlPlane) -> Iterator[object]:
    """A fresh, signed-out tab at 1280 px, with `server.url` as the base URL."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
