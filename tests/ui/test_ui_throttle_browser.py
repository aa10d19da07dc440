"""A throttled sign-in in a real headless Chromium: the sixth failure within a minute from one
address gets the 429 page, and then even the right password is refused.

In a module of its own: its control plane (a module-scoped fixture) stays blocked for
127.0.0.1 afterwards, which would sign every later browser test out.
Screenshot: test-artifacts/screenshots/login-throttled.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import ADMIN, PASSWORD
from tests.ui.test_ui_browser import shot

pytestmark = pytest.mark.browser


def attempt(page: Page, password: str) -> int:
    """Submit the sign-in form; returns the HTTP status of the answer."""
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill(password)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    return answer.value.status


def test_the_sixth_failed_sign_in_gets_the_429_page(page: Page, screenshots: Path):
    page.goto("/login")
    statuses = [attempt(page, f"wrong guess {n}") for n in range(5)]
    assert statuses == [401] * 5
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    assert attempt(page, PASSWORD) == 429
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Too many failed sign-ins. Try again in")
    expect(alert).to_contain_text("every further block lasts longer")
    expect(page.get_by_label("Username")).to_have_value(ADMIN)
    shot(page, screenshots, "login-throttled")
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
