"""Request logging set from the model forms in a real headless Chromium: created with the
model, shown on its page and in its revision, edited, refused beside the input, removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import LOG_ROOT
from tests.ui.test_ui_browser import flashed_revision, shot, sign_in

pytestmark = pytest.mark.browser
MODEL = "ui_logged"


def test_request_logging_is_set_edited_and_removed_from_the_model_forms(
    page: Page, screenshots: Path
):
    sign_in(page, "/models/new")
    page.get_by_label("Name").fill(MODEL)
    page.get_by_label("Base path").fill(f"/models/{MODEL}")
    page.get_by_label("Log file prefix").fill(f"{LOG_ROOT}/{MODEL}/requests")
    page.get_by_label("Sampling rate").fill("0.25")
    page.get_by_label("Format").select_option("jsonl")
    page.get_by_role("button", name="Create model").click()
    created = flashed_revision(page, rf"Created model {MODEL}")
    summary = page.locator(".logging-summary")
    expect(summary).to_have_text(f"logs 0.25 of requests to {LOG_ROOT}/{MODEL}/requests (jsonl)")
    expect(page.get_by_label("Sampling rate")).to_have_value("0.25")
    expect(page.get_by_label("Format")).to_have_value("jsonl")
    shot(page, screenshots, "model-request-logging")

    page.get_by_label("Sampling rate").fill("1.5")
    page.get_by_label("Log file prefix").fill("/etc/cron.d/evil")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#log_rate-error")).to_have_text("must be between 0 and 1, got 1.5")
    expect(page.get_by_label("Sampling rate")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Sampling rate").fill("1")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#log_prefix-error")).to_have_text(f"must be under one of ['{LOG_ROOT}']")
    page.get_by_label("Log file prefix").fill(f"{LOG_ROOT}/{MODEL}/all")
    page.get_by_label("Format").select_option("")
    page.get_by_role("button", name="Save changes").click()
    edited = flashed_revision(page, rf"Saved model {MODEL}")
    assert edited > created
    expect(summary).to_have_text(f"logs 1 of requests to {LOG_ROOT}/{MODEL}/all (tfrecord)")

    page.goto(f"/revisions/{edited}")
    config = page.locator("body")
    expect(config).to_contain_text(f'filename_prefix: "{LOG_ROOT}/{MODEL}/all"')
    expect(config).to_contain_text("sampling_rate: 1.0")

    page.goto(f"/models/{MODEL}")
    page.get_by_label("Log file prefix").fill("")
    page.get_by_label("Sampling rate").fill("")
    page.get_by_role("button", name="Save changes").click()
    flashed_revision(page, rf"Saved model {MODEL}")
    expect(summary).to_have_text("no request logging")
    expect(page.get_by_label("Log file prefix")).to_have_value("")
