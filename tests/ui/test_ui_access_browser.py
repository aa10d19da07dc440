"""The tokens & admins page in a real headless Chromium against a real control plane: revoke a
token and disable an admin through the confirmation pages, and see both take effect at once
(the token's next API call is 401, the admin's open tab is signed out at its next request).

Screenshot: test-artifacts/screenshots/access.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.ui.conftest import ADMIN, UIControlPlane
from tests.ui.test_ui_browser import shot, sign_in

pytestmark = pytest.mark.browser
BOB, BOB_PASSWORD = "bob", "battery staple horse"


def create_token(server: UIControlPlane, name: str, scope: str) -> str:
    response = requests.post(
        f"{server.url}/api/v1/tokens",
        json={"name": name, "scope": scope, "expires_in_days": 30},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


def models_status(server: UIControlPlane, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{server.url}/api/v1/models", headers=headers, timeout=10).status_code


def test_revoke_a_token_and_disable_an_admin_from_the_page(
    page: Page, server: UIControlPlane, screenshots: Path
):
    ci = create_token(server, "ci-deploy", "write")
    create_token(server, "dashboards", "read")
    assert models_status(server, ci) == 200
    server.create_admin(BOB, BOB_PASSWORD)
    bob = page.context.browser.new_context(base_url=server.url)
    bob_tab = bob.new_page()
    bob_tab.goto("/login")
    bob_tab.get_by_label("Username").fill(BOB)
    bob_tab.get_by_label("Password").fill(BOB_PASSWORD)
    bob_tab.get_by_role("button", name="Sign in").click()
    expect(bob_tab.locator(".who")).to_have_text(f"Signed in as {BOB}")

    sign_in(page)
    page.get_by_role("link", name="Tokens & admins").click()
    expect(page.get_by_role("heading", name="Tokens & admins")).to_be_visible()
    ci_row = page.locator("#tokens tr[data-token='ci-deploy']")
    expect(ci_row.locator("[data-state]")).to_have_attribute("data-state", "active")
    expect(ci_row).to_contain_text("write")
    expect(page.locator("#tokens tr[data-token='e2e']")).to_contain_text("admin")
    expect(page.locator("#admins tr[data-admin='alice']")).to_contain_text("(you)")
    expect(page.get_by_role("link", name=f"Disable admin {ADMIN}")).to_have_count(0)
    shot(page, screenshots, "access")

    page.get_by_role("link", name="Revoke token ci-deploy").click()
    expect(page.get_by_role("heading", name="Revoke API token ci-deploy?")).to_be_visible()
    page.get_by_role("button", name="Revoke API token ci-deploy").click()
    expect(page.locator(".flash-success")).to_contain_text("Revoked API token ci-deploy")
    expect(ci_row.locator("[data-state]")).to_have_attribute("data-state", "revoked")
    expect(page.get_by_role("link", name="Revoke token ci-deploy")).to_have_count(0)
    assert models_status(server, ci) == 401

    page.get_by_role("link", name=f"Disable admin {BOB}").click()
    page.get_by_role("button", name=f"Disable admin {BOB}").click()
    expect(page.locator(".flash-success")).to_contain_text(f"Disabled admin {BOB}")
    bob_row = page.locator(f"#admins tr[data-admin='{BOB}']")
    expect(bob_row.locator("[data-state]")).to_have_attribute("data-state", "disabled")
    bob_tab.reload()
    expect(bob_tab).to_have_url(re.compile(r"/login\?next="))
    expect(bob_tab.get_by_role("heading", name="Sign in")).to_be_visible()
    bob.close()

    page.get_by_role("link", name="Audit log").click()
    audit = page.locator("#audit")
    expect(audit.locator("tr", has_text="admin.disable")).to_contain_text(f"admin:{ADMIN}")
    expect(audit.locator("tr", has_text="token.revoke")).to_contain_text("ci-deploy")
