"""The admin UI through Flask's test client: sign-in, CSRF, validation, every write path."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from controlplane import audit, auth, planes, store
from controlplane.config import Settings
from controlplane.db import Database
from tests.support.controlplane import running_app
from tests.ui.conftest import ADMIN, LOG_ROOT, PASSWORD, SECRET_KEY, csrf_token

PAGES = [
    "/",
    "/models/new",
    "/revisions",
    "/revisions/diff",
    "/audit",
    "/fragments/fleet",
    "/models/anything",
    "/revisions/1",
    "/revisions/1/rollback",
    "/access",
    "/access/tokens/revoke?name=x",
    "/access/admins/disable?username=x",
    "/traffic",
    "/traffic/data",
]
WRITES = [
    "/models/new",
    "/models/m/labels",
    "/revisions/1/rollback",
    "/dataplanes",
    "/reconcile",
    "/logout",
    "/access/tokens/revoke",
    "/access/admins/disable",
]


def html(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def post_form(client: FlaskClient, url: str, data: dict[str, str]) -> TestResponse:
    """POST like the browser does: with the token of the page the form came from."""
    token = csrf_token(html(client.get("/")))
    return client.post(url, data={"csrf_token": token, **data})


def field_error(page: str, field: str) -> str:
    """The message shown beside input `field`, which must point at it with aria-describedby."""
    match = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', page)
    assert match, f"no error beside {field}"
    assert f'aria-describedby="{field}-error"' in page
    return match.group(1)


def create(client: FlaskClient, name: str = "digits", **fields: str) -> TestResponse:
    data = {"name": name, "base_path": f"/models/{name}", "policy": "all", **fields}
    return post_form(client, "/models/new", data)


# -- who may do what --------------------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_pages_redirect_to_login_with_next(client: FlaskClient, url: str):
    response = client.get(url)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    assert client.get(response.headers["Location"]).status_code == 200


def test_anonymous_writes_are_refused_even_with_a_valid_token(client: FlaskClient, db: Database):
    token = csrf_token(html(client.get("/login")))
    for url in WRITES:
        response = client.post(url, data={"csrf_token": token, "name": "x", "address": "a:1"})
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next=")
    assert store.list_models(db) == []
    assert planes.list_planes(db) == []


def test_login_rejects_a_wrong_password_without_echoing_it(client: FlaskClient, admin: str):
    token = csrf_token(html(client.get("/login")))
    data = {"username": ADMIN, "password": "not-the-password", "csrf_token": token}
    response = client.post("/login", data=data)
    assert response.status_code == 401
    assert "Wrong username or password." in html(response)
    assert "not-the-password" not in html(response)
    assert f'value="{ADMIN}"' in html(response)
    assert client.get("/").status_code == 302


def test_login_sets_a_hardened_session_cookie_and_follows_next(client: FlaskClient, admin: str):
    token = csrf_token(html(client.get("/login?next=/audit")))
    data = {"username": ADMIN, "password": PASSWORD, "csrf_token": token}
    response = client.post("/login?next=/audit", data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == "/audit"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", cookie).group(1))
    hours = (expires - datetime.now(UTC)).total_seconds() / 3600
    assert 11.9 < hours <= 12.0  # the idle limit, renewed by every request
    assert client.get("/audit").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_login_never_redirects_off_site(client: FlaskClient, admin: str, target: str):
    token = csrf_token(html(client.get("/login")))
    data = {"username": ADMIN, "password": PASSWORD, "csrf_token": token}
    response = client.post("/login", query_string={"next": target}, data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_secure_cookies_can_be_required(db: Database):
    settings = Settings(
        database_url=db.url, run_fleet=False, secret_key=SECRET_KEY, secure_cookies=True
    )
    with running_app(settings) as app:
        assert app.config["SESSION_COOKIE_SECURE"] is True
        cookie = app.test_client().get("/login").headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie


def test_logout_needs_a_post_and_ends_the_session(signed_in: FlaskClient):
    assert signed_in.get("/logout").status_code == 405
    response = post_form(signed_in, "/logout", {})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert "Signed out." in html(signed_in.get("/login"))
    assert signed_in.get("/").status_code == 302


def test_a_deactivated_admin_is_signed_out(signed_in: FlaskClient, db: Database):
    from sqlalchemy import update

    from controlplane.models import AdminUser

    with db.transaction() as session:
        session.execute(update(AdminUser).values(active=False))
    assert signed_in.get("/").status_code == 302


# -- CSRF -------------------------------------------------------------------------------------


def test_a_post_without_csrf_token_is_refused(signed_in: FlaskClient, db: Database):
    data = {"name": "sneaky", "base_path": "/models/sneaky", "policy": "all"}
    response = signed_in.post("/models/new", data=data)
    assert response.status_code == 400
    assert "security token" in html(response)
    forged = signed_in.post("/models/new", data={**data, "csrf_token": "forged"})
    assert forged.status_code == 400
    assert store.list_models(db) == []


def test_login_itself_needs_a_csrf_token(client: FlaskClient, admin: str):
    response = client.post("/login", data={"username": ADMIN, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_the_bearer_token_api_is_not_subject_to_csrf(app: Flask, db: Database):
    token = auth.create_token(db, "automation", "write")
    body = {"name": "api_made", "base_path": "/models/api_made", "model_platform": "tensorflow"}
    response = app.test_client().post(
        "/api/v1/models", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.get_json()
    assert [m.config.name for m in store.list_models(db)] == ["api_made"]


# -- pages carry no secrets and harden the browser ----------------------------------------------


def test_pages_hold_no_secret_and_send_security_headers(
    signed_in: FlaskClient, db: Database, admin: str
):
    from sqlalchemy import select

    from controlplane.models import AdminUser

    api_token = auth.create_token(db, "hidden", "read")
    assert create(signed_in).status_code == 302
    with db.transaction() as session:
        password_hash = session.scalar(select(AdminUser.password_hash))
    for url in ["/", "/models/digits", "/models/new", "/revisions", "/revisions/1", "/audit"]:
        response = signed_in.get(url)
        assert response.status_code == 200, url
        for secret in (SECRET_KEY, PASSWORD, password_hash, api_token, auth.hash_token(api_token)):
            assert secret not in html(response), (url, secret[:6])
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"


# -- models -----------------------------------------------------------------------------------


def test_create_model_records_who_did_it(signed_in: FlaskClient, db: Database, admin: str):
    response = create(signed_in, "digits", policy="specific", versions="1, 2")
    assert response.status_code == 302
    assert response.headers["Location"] == "/models/digits"
    page = html(signed_in.get("/models/digits"))
    assert "Created model digits (revision 1)." in page
    assert 'value="1, 2"' in page
    model = store.get_model(db, "digits").to_json()
    assert model["model_version_policy"] == {"specific": {"versions": [1, 2]}}
    assert model["base_path"] == "/models/digits"
    entry = audit.recent(db)[0]
    assert (entry["actor"], entry["action"], entry["revision"]) == (admin, "model.create", 1)
    assert "admin:alice" in html(signed_in.get("/audit"))


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "bad name!"}, "name", "is required: 1-128 characters"),
        ({"base_path": "relative/dir"}, "base_path", "must be an absolute path or a URI"),
        ({"base_path": ""}, "base_path", "is required"),
        ({"policy": "latest", "num_versions": "0"}, "num_versions", "at least 1"),
        ({"policy": "latest", "num_versions": "two"}, "num_versions", "whole number"),
        ({"policy": "specific", "versions": ""}, "versions", "at least one version"),
        ({"policy": "specific", "versions": "1, x"}, "versions", "whole number"),
        ({"policy": "specific", "versions": "2, 2"}, "versions", "has duplicates"),
        ({"log_rate": "0.5"}, "log_prefix", "is required"),
        ({"log_prefix": f"{LOG_ROOT}/d", "log_rate": "lots"}, "log_rate", "must be a number"),
        ({"log_prefix": f"{LOG_ROOT}/d", "log_rate": "2"}, "log_rate", "between 0 and 1"),
        ({"log_prefix": f"{LOG_ROOT}/d", "log_type": "kafka"}, "log_type", "must be one of"),
        ({"log_prefix": "/etc/d"}, "log_prefix", f"must be under one of [&#39;{LOG_ROOT}&#39;]"),
    ],
)
def test_validation_errors_show_beside_the_field(
    signed_in: FlaskClient, db: Database, fields: dict[str, str], field: str, message: str
):
    response = create(signed_in, **fields)
    assert response.status_code == 400
    assert message in field_error(html(response), field)
    assert 'aria-invalid="true"' in html(response)
    assert store.list_models(db) == []


def test_the_form_keeps_what_was_typed_after_an_error(signed_in: FlaskClient):
    response = create(signed_in, "keepme", base_path="relative", policy="specific", versions="3")
    page = html(response)
    assert 'value="keepme"' in page and 'value="relative"' in page and 'value="3"' in page
    assert 'id="policy-specific" name="policy" value="specific" checked' in page


def test_a_duplicate_name_is_a_conflict_beside_the_name(signed_in: FlaskClient):
    assert create(signed_in).status_code == 302
    response = create(signed_in)
    assert response.status_code == 409
    assert "already exists" in field_error(html(response), "name")


def test_edit_changes_the_policy_and_keeps_labels(signed_in: FlaskClient, db: Database):
    create(signed_in, "digits", policy="specific", versions="1, 2")
    store.set_label(db, "digits", "stable", 2, None, "admin:bob")
    data = {"base_path": "/models/v2/digits", "policy": "latest", "num_versions": "2"}
    response = post_form(signed_in, "/models/digits", {**data, "revision": "2"})
    assert response.status_code == 302
    model = store.get_model(db, "digits").to_json()
    assert model["base_path"] == "/models/v2/digits"
    assert model["model_version_policy"] == {"latest": {"num_versions": 2}}
    assert model["version_labels"] == {"stable": 2}
    assert model["revision"] == 3


def test_request_logging_is_set_kept_by_an_edit_and_removed(signed_in: FlaskClient, db: Database):
    logging = {"log_prefix": f"{LOG_ROOT}/digits", "log_rate": "0.01", "log_type": "jsonl"}
    assert create(signed_in, "digits", **logging).status_code == 302
    expected = {
        "sampling_config": {"sampling_rate": 0.01},
        "log_collector_config": {"type": "jsonl", "filename_prefix": f"{LOG_ROOT}/digits"},
    }
    assert store.get_model(db, "digits").to_json()["logging_config"] == expected
    page = html(signed_in.get("/models/digits"))
    assert f"logs 0.01 of requests to {LOG_ROOT}/digits (jsonl)" in page
    assert '<option value="jsonl" selected>' in page
    edit = {"base_path": "/models/digits", "policy": "all", "revision": "1", **logging}
    assert post_form(signed_in, "/models/digits", edit).status_code == 302
    assert store.get_model(db, "digits").to_json()["logging_config"] == expected
    cleared = {**edit, "revision": "2", "log_prefix": "", "log_rate": ""}
    assert post_form(signed_in, "/models/digits", cleared).status_code == 302
    assert "logging_config" not in store.get_model(db, "digits").to_json()
    assert "no request logging" in html(signed_in.get("/models/digits"))


def test_an_edit_from_a_stale_page_is_refused(signed_in: FlaskClient, db: Database):
    create(signed_in, "digits")
    store.set_label(db, "digits", "stable", 1, None, "admin:bob")
    data = {"base_path": "/elsewhere", "policy": "all", "revision": "1"}
    response = post_form(signed_in, "/models/digits", data)
    assert response.status_code == 409
    assert "is at revision 2, not 1: reload and retry" in html(response)
    assert store.get_model(db, "digits").config.base_path == "/models/digits"


def test_a_label_error_shows_beside_the_label_input(signed_in: FlaskClient, db: Database):
    create(signed_in, "digits", policy="specific", versions="1")
    response = post_form(signed_in, "/models/digits/labels", {"label": "9lives", "version": "1"})
    assert response.status_code == 400
    assert "must start with a letter" in field_error(html(response), "label")
    assert 'value="9lives"' in html(response)
    response = post_form(signed_in, "/models/digits/labels", {"label": "stable", "version": "x"})
    assert "whole number" in field_error(html(response), "version")
    assert store.get_model(db, "digits").config.version_labels == {}


def test_move_and_remove_a_label(signed_in: FlaskClient, db: Database, admin: str):
    create(signed_in, "digits", policy="specific", versions="1,2")
    post_form(signed_in, "/models/digits/labels", {"label": "stable", "version": "1"})
    moved = post_form(
        signed_in, "/models/digits/labels", {"label": "stable", "version": "2", "revision": "2"}
    )
    assert moved.status_code == 302
    model = store.get_model(db, "digits").to_json()
    assert model["version_labels"] == {"stable": 2}
    assert model["model_version_policy"] == {"specific": {"versions": [1, 2]}}
    assert "Label stable of digits now points at version 2 (revision 3)." in html(
        signed_in.get("/models/digits")
    )
    stale = post_form(signed_in, "/models/digits/labels/stable/delete", {"revision": "2"})
    assert stale.status_code == 409
    removed = post_form(signed_in, "/models/digits/labels/stable/delete", {"revision": "3"})
    assert removed.status_code == 302
    assert store.get_model(db, "digits").config.version_labels == {}
    actions = [e["action"] for e in audit.recent(db)]
    assert actions[:3] == ["label.delete", "label.set", "label.set"]
    assert audit.recent(db)[0]["actor"] == admin


def test_delete_a_model_after_confirmation(signed_in: FlaskClient, db: Database):
    create(signed_in, "digits")
    confirm = signed_in.get("/models/digits/delete")
    assert "Delete model digits?" in html(confirm)
    assert 'name="revision" value="1"' in html(confirm)
    assert post_form(signed_in, "/models/digits/delete", {"revision": "1"}).status_code == 302
    assert store.list_models(db) == []
    assert signed_in.get("/models/digits").status_code == 404


# -- revisions --------------------------------------------------------------------------------


def test_diff_between_any_two_revisions(signed_in: FlaskClient, db: Database):
    create(signed_in, "first")
    create(signed_in, "second", policy="specific", versions="4")
    store.set_label(db, "second", "stable", 4, None, "admin:bob")
    page = html(signed_in.get("/revisions/diff?from=1&to=3"))
    assert "Revision 1 → 3" in page
    assert '<span class="chip tone-ok">added second</span>' in page
    assert '<span class="diff-add">+    name: &#34;second&#34;</span>' in page
    assert '<span class="diff-add">+      key: &#34;stable&#34;</span>' in page
    assert "diff-del" not in page
    default = html(signed_in.get("/revisions/diff"))
    assert "Revision 2 → 3" in default
    assert '<span class="chip tone-busy">changed second</span>' in default


def test_rollback_asks_first_then_creates_a_new_head(signed_in: FlaskClient, db: Database):
    create(signed_in, "keep")
    create(signed_in, "drop")
    confirm = html(signed_in.get("/revisions/1/rollback"))
    assert "Roll back to revision 1?" in confirm
    assert "This creates revision 3" in confirm
    assert '<span class="chip tone-bad">removed drop</span>' in confirm
    assert [m.config.name for m in store.list_models(db)] == ["drop", "keep"]
    response = post_form(signed_in, "/revisions/1/rollback", {})
    assert response.status_code == 302
    assert response.headers["Location"] == "/revisions"
    assert [m.config.name for m in store.list_models(db)] == ["keep"]
    head = store.list_revisions(db)[0]
    assert (head.number, head.rollback_of, head.author) == (3, 1, "admin:alice")
    assert "Rolled back to revision 1: the new head is revision 3." in html(
        signed_in.get("/revisions")
    )


def test_unknown_things_are_a_404_page(signed_in: FlaskClient):
    for url in ["/models/nope", "/revisions/42", "/revisions/42/rollback", "/dataplanes/9/delete"]:
        response = signed_in.get(url)
        assert response.status_code == 404, url
        assert "<h1>Not found</h1>" in html(response)


# -- data planes and the live fragment --------------------------------------------------------


def test_add_a_data_plane_and_see_it_in_the_live_fragment(signed_in: FlaskClient, db: Database):
    assert post_form(signed_in, "/dataplanes", {"address": "10.0.0.7:8500"}).status_code == 302
    fragment = html(signed_in.get("/fragments/fleet"))
    assert "<html" not in fragment
    assert '<tr data-plane="10.0.0.7:8500">' in fragment
    assert '<span class="badge tone-busy" data-state="pending">' in fragment
    assert "<strong>0 of 1</strong> data planes serve the head" in fragment
    assert [p.address for p in planes.list_planes(db)] == ["10.0.0.7:8500"]


def test_fragment_shows_one_models_version_states(signed_in: FlaskClient, db: Database):
    from controlplane.planes import Observation, record_observation

    plane = planes.add_plane(db, "10.0.0.7:8500", "admin:bob")
    create(signed_in, "digits")
    states = {"digits": {"1": "AVAILABLE", "2": "LOADING"}, "other": {"3": "AVAILABLE"}}
    record_observation(db, plane.id, 1, Observation("inc-1", states, True, False))
    fragment = html(signed_in.get("/fragments/fleet?model=digits"))
    assert '<span class="badge tone-ok" data-state="in_sync">' in fragment
    assert 'data-version="1" data-state="AVAILABLE"' in fragment
    assert 'data-version="2" data-state="LOADING"' in fragment
    assert 'data-version="3"' not in fragment
    page = html(signed_in.get("/models/digits"))
    assert '<option value="1">1 — available on 1 of 1</option>' in page
    assert '<option value="2">2 — available on 0 of 1</option>' in page


def test_a_bad_address_shows_beside_the_field(signed_in: FlaskClient, db: Database):
    response = post_form(signed_in, "/dataplanes", {"address": "no-port"})
    assert response.status_code == 400
    assert field_error(html(response), "address") == "must be host:port or dns:///host:port"
    assert 'value="no-port"' in html(response)
    post_form(signed_in, "/dataplanes", {"address": "h:1"})
    duplicate = post_form(signed_in, "/dataplanes", {"address": "h:1"})
    assert "already registered" in field_error(html(duplicate), "address")


def test_remove_a_data_plane_after_confirmation(signed_in: FlaskClient, db: Database):
    plane = planes.add_plane(db, "10.0.0.7:8500", "admin:bob")
    confirm = html(signed_in.get(f"/dataplanes/{plane.id}/delete"))
    assert "Remove data plane 10.0.0.7:8500?" in confirm
    assert post_form(signed_in, f"/dataplanes/{plane.id}/delete", {}).status_code == 302
    assert planes.list_planes(db) == []
    assert audit.recent(db)[0]["action"] == "dataplane.delete"


# -- sign-ins: throttled and audited ----------------------------------------------------------


def sign_in_form(client: FlaskClient, password: str, username: str = ADMIN) -> TestResponse:
    token = csrf_token(html(client.get("/login")))
    data = {"username": username, "password": password, "csrf_token": token}
    return client.post("/login", data=data)


def test_the_sixth_failed_sign_in_in_a_minute_is_429_even_with_the_right_password(
    client: FlaskClient, db: Database, admin: str
):
    for _ in range(5):
        assert sign_in_form(client, "wrong password").status_code == 401
    refused = sign_in_form(client, PASSWORD)
    assert refused.status_code == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert "Too many failed sign-ins. Try again in" in html(refused)
    assert client.get("/").status_code == 302  # still signed out
    entries = audit.recent(db)
    assert [e["action"] for e in entries[:2]] == ["login.blocked", "login.blocked"]
    assert {e["target"] for e in entries[:2]} == {"addr:127.0.0.1", f"user:{ADMIN}"}
    failures = [e for e in entries if e["action"] == "login.failure"]
    assert len(failures) == 5
    assert failures[0]["detail"] == {"address": "127.0.0.1"} and failures[0]["target"] == ADMIN


def test_sign_in_sign_out_and_reconcile_are_audited(signed_in: FlaskClient, db: Database):
    assert post_form(signed_in, "/reconcile", {}).status_code == 302
    assert post_form(signed_in, "/logout", {}).status_code == 302
    entries = [(e["actor"], e["action"], e["target"]) for e in audit.recent(db)]
    assert entries == [
        (f"admin:{ADMIN}", "logout", ADMIN),
        (f"admin:{ADMIN}", "reconcile", "all data planes"),
        (f"admin:{ADMIN}", "login.success", ADMIN),
    ]
    assert sign_in_form(signed_in, PASSWORD).status_code == 302
    page = html(signed_in.get("/audit"))
    assert page.count("<code>login.success</code>") == 2 and "<code>logout</code>" in page
    assert "address=127.0.0.1" in page


# -- tokens and admins ------------------------------------------------------------------------


def test_the_access_page_lists_tokens_and_admins_with_their_state(
    signed_in: FlaskClient, db: Database
):
    from datetime import timedelta

    from sqlalchemy import update

    from controlplane.models import ApiToken, utcnow

    auth.create_token(db, "ci", "write", 30)
    auth.create_token(db, "old", "admin")
    auth.create_token(db, "reader", "read", 1)
    auth.revoke_token(db, "old", "cli")
    with db.transaction() as session:
        past = utcnow() - timedelta(days=1)
        session.execute(update(ApiToken).where(ApiToken.name == "reader").values(expires_at=past))
    auth.create_admin(db, "bob", "battery staple")
    page = html(signed_in.get("/access"))
    rows = re.findall(r'<tr data-token="([^"]+)">.*?data-state="([a-z]+)"', page, re.S)
    assert rows == [("ci", "active"), ("old", "revoked"), ("reader", "expired")]
    assert "<code>write</code>" in page and "<code>read</code>" in page
    assert 'aria-label="Revoke token ci"' in page
    assert 'aria-label="Revoke token old"' not in page
    admins = re.findall(r'<tr data-admin="([^"]+)">.*?data-state="([a-z]+)"', page, re.S)
    assert admins == [(ADMIN, "active"), ("bob", "active")]
    assert 'aria-label="Disable admin bob"' in page
    assert f'aria-label="Disable admin {ADMIN}"' not in page  # nobody disables themselves


def test_revoke_a_token_after_confirmation(signed_in: FlaskClient, db: Database, admin: str):
    token = auth.create_token(db, "ci", "write")
    confirm = html(signed_in.get("/access/tokens/revoke?name=ci"))
    assert "Revoke API token ci?" in confirm
    assert '<input type="hidden" name="name" value="ci">' in confirm
    assert signed_in.post("/access/tokens/revoke", data={"name": "ci"}).status_code == 400
    assert auth.authenticate_token(db, token).name == "ci"  # no CSRF token: nothing happened
    done = post_form(signed_in, "/access/tokens/revoke", {"name": "ci"})
    assert done.status_code == 302 and done.headers["Location"] == "/access"
    assert "Revoked API token ci" in html(signed_in.get("/access"))
    with pytest.raises(auth.Refused, match="token revoked"):
        auth.authenticate_token(db, token)
    assert audit.recent(db)[0]["actor"] == admin
    again = post_form(signed_in, "/access/tokens/revoke", {"name": "ci"})
    assert again.status_code == 302
    assert "already revoked" in html(signed_in.get("/access"))
    assert signed_in.get("/access/tokens/revoke?name=nope").status_code == 404


def test_disabling_an_admin_ends_their_open_session(
    app: Flask, signed_in: FlaskClient, db: Database
):
    auth.create_admin(db, "bob", "battery staple")
    bob = app.test_client()
    assert sign_in_form(bob, "battery staple", "bob").status_code == 302
    assert bob.get("/access").status_code == 200
    confirm = html(signed_in.get("/access/admins/disable?username=bob"))
    assert "Disable admin bob?" in confirm
    assert post_form(signed_in, "/access/admins/disable", {"username": "bob"}).status_code == 302
    ended = bob.get("/access")
    assert ended.status_code == 302 and ended.headers["Location"].startswith("/login")
    assert sign_in_form(bob, "battery staple", "bob").status_code == 401
    self_disable = post_form(signed_in, "/access/admins/disable", {"username": ADMIN})
    assert self_disable.status_code == 302
    assert "You cannot disable yourself" in html(signed_in.get("/access"))
    assert signed_in.get("/access").status_code == 200
    assert [a.active for a in auth.list_admins(db)] == [True, False]


# -- traffic ----------------------------------------------------------------------------------


def test_traffic_page_and_its_data_for_a_signed_in_admin(signed_in: FlaskClient):
    page = html(signed_in.get("/traffic?model=digits"))
    assert 'data-traffic="/traffic/data?model=digits"' in page
    assert "/ui/static/charts.js" in page and "/ui/static/traffic.js" in page
    data = signed_in.get("/traffic/data?span_s=600")
    assert data.status_code == 200
    body = data.get_json()
    assert (body["span_s"], body["step_s"], body["models"], body["planes"]) == (600, 30, [], [])
    assert len(body["timestamps"]) == 20
    bad = signed_in.get("/traffic/data?span_s=nan")
    assert bad.status_code == 400 and bad.get_json()["field"] == "span_s"
    assert signed_in.get("/ui/static/charts.js").status_code == 200
