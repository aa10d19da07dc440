"""The JSON API against a real database (SQLite and PostgreSQL), without data planes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from controlplane import auth
from controlplane.models import ModelConfigRow, Revision
from tests.controlplane.conftest import LOG_ROOT

MODEL = {
    "name": "m",
    "base_path": "/models/m",
    "model_platform": "tensorflow",
    "model_version_policy": {"specific": {"versions": [1, 2]}},
    "version_labels": {"stable": 1},
}


def create(api, body=None):
    response = api("post", "/models", json=body or MODEL)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_every_api_call_needs_a_valid_bearer_token(app, api):
    client = app.test_client()
    assert client.get("/api/v1/models").status_code == 401
    wrong = client.get("/api/v1/models", headers={"Authorization": "Bearer mp_nope"})
    assert wrong.status_code == 401
    assert wrong.get_json() == {"error": "missing or invalid bearer token"}
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    basic = client.get("/api/v1/models", headers={"Authorization": "Basic dTpw"})
    assert basic.status_code == 401
    assert api("get", "/models").status_code == 200


def test_healthz_needs_no_auth_and_reports_the_database(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": True}


def test_create_get_list_delete_model(api):
    created = create(api)
    assert created == {**MODEL, "revision": 1}
    got = api("get", "/models/m")
    assert got.status_code == 200
    assert got.headers["ETag"] == '"1"'
    assert got.get_json() == created
    assert api("get", "/models").get_json() == {"models": [created]}
    assert api("delete", "/models/m").status_code == 204
    assert api("get", "/models/m").status_code == 404
    assert api("get", "/models").get_json() == {"models": []}


def test_duplicate_name_is_409_and_unknown_is_404(api):
    create(api)
    duplicate = api("post", "/models", json=MODEL)
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.get_json()["error"]
    assert api("get", "/models/zzz").status_code == 404
    assert api("put", "/models/zzz", json={"base_path": "/x"}).status_code == 404
    assert api("delete", "/models/zzz").status_code == 404
    assert api("get", "/revisions/99").status_code == 404
    assert api("get", "/dataplanes/99").status_code == 404
    assert api("delete", "/models/m/labels/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "m"}, "base_path"),
        ({"name": "m", "base_path": "/m", "bogus": 1}, "bogus"),
        ({"name": "m", "base_path": "/m", "version_labels": {"s": "x"}}, "version_labels"),
    ],
)
def test_bad_model_bodies_are_400_naming_the_field(api, body, field):
    response = api("post", "/models", json=body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert field in response.get_json()["error"]


def test_non_json_body_is_400(api):
    response = api("post", "/models", data="not json", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["field"] == "body"


def test_put_replaces_and_a_stale_revision_is_409(api):
    create(api)
    changed = {**MODEL, "base_path": "/models/m2", "revision": 1}
    ok = api("put", "/models/m", json=changed)
    assert ok.status_code == 200
    assert ok.get_json()["revision"] == 2
    assert ok.get_json()["base_path"] == "/models/m2"
    assert ok.headers["ETag"] == '"2"'
    stale = api("put", "/models/m", json={**MODEL, "revision": 1})
    assert stale.status_code == 409
    assert api("get", "/models/m").get_json()["base_path"] == "/models/m2"
    unconditional = api("put", "/models/m", json=MODEL)
    assert unconditional.get_json()["revision"] == 3


def test_if_match_guards_writes(api):
    create(api)
    stale = api("put", "/models/m/labels/stable", json={"version": 2}, headers={"If-Match": '"0"'})
    assert stale.status_code == 409
    fresh = api("put", "/models/m/labels/stable", json={"version": 2}, headers={"If-Match": '"1"'})
    assert fresh.status_code == 200
    assert fresh.get_json()["version_labels"] == {"stable": 2}
    bad = api("delete", "/models/m", headers={"If-Match": "1"})
    assert bad.status_code == 400
    assert bad.get_json()["field"] == "If-Match"
    assert api("delete", "/models/m", headers={"If-Match": '"1"'}).status_code == 409
    assert api("delete", "/models/m", headers={"If-Match": '"2"'}).status_code == 204


def test_label_put_and_delete_answer_with_the_model(api):
    create(api)
    moved = api("put", "/models/m/labels/stable", json={"version": 2})
    assert moved.status_code == 200
    body = moved.get_json()
    assert body["version_labels"] == {"stable": 2}
    assert body["model_version_policy"] == {"specific": {"versions": [1, 2]}}
    assert body["revision"] == 2
    added = api("put", "/models/m/labels/canary", json={"version": 1, "revision": 2})
    assert added.get_json()["version_labels"] == {"canary": 1, "stable": 2}
    removed = api("delete", "/models/m/labels/canary")
    assert removed.status_code == 200
    assert removed.get_json()["version_labels"] == {"stable": 2}
    assert removed.get_json()["revision"] == 4
    for bad in ({}, {"version": 0}, {"version": "2"}, {"version": True}):
        response = api("put", "/models/m/labels/stable", json=bad)
        assert response.status_code == 400
        assert response.get_json()["field"] == "version"


def test_label_on_a_version_the_specific_policy_does_not_list_is_refused(api):
    create(api, {**MODEL, "model_version_policy": {"specific": {"versions": [1]}}})
    refused = api("put", "/models/m/labels/stable", json={"version": 2})
    assert refused.status_code == 400
    assert refused.get_json() == {
        "error": "version_labels.stable: version 2 is not served by model_version_policy "
        "specific {versions: [1]}",
        "field": "version_labels.stable",
    }
    unchanged = api("get", "/models/m").get_json()
    assert (unchanged["version_labels"], unchanged["revision"]) == ({"stable": 1}, 1)


def test_revisions_are_newest_first_with_their_config(api):
    create(api)
    api("put", "/models/m/labels/stable", json={"version": 2})
    api("delete", "/models/m")
    listed = api("get", "/revisions").get_json()["revisions"]
    assert [r["revision"] for r in listed] == [3, 2, 1]
    assert [r["author"] for r in listed] == ["token:tests"] * 3
    assert listed[0]["message"] == "delete model m"
    assert listed[1]["message"] == "set label stable of m to version 2"
    assert all(r["created_at"].endswith("Z") for r in listed)
    detail = api("get", "/revisions/2").get_json()
    assert detail["revision"] == 2
    assert 'name: "m"' in detail["model_server_config"]
    assert 'key: "stable"\n      value: 2' in detail["model_server_config"]
    assert (
        api("get", "/revisions/3").get_json()["model_server_config"] == "model_config_list {\n}\n"
    )


def test_rollback_makes_a_new_head_equal_to_the_old_revision(api):
    create(api)
    api("post", "/models", json={**MODEL, "name": "n", "version_labels": {}})
    api("put", "/models/m/labels/stable", json={"version": 2})
    response = api("post", "/revisions/1/rollback")
    assert response.status_code == 201
    rolled = response.get_json()
    assert rolled["revision"] == 4
    assert rolled["rollback_of"] == 1
    assert (
        rolled["model_server_config"]
        == api("get", "/revisions/1").get_json()["model_server_config"]
    )
    assert rolled["fingerprint"] == api("get", "/revisions/1").get_json()["fingerprint"]
    assert [m["name"] for m in api("get", "/models").get_json()["models"]] == ["m"]
    assert api("get", "/models/m").get_json() == {**MODEL, "revision": 4}
    assert api("post", "/revisions/42/rollback").status_code == 404


def test_diff_between_revisions(api):
    create(api)
    api("put", "/models/m/labels/stable", json={"version": 2})
    diff = api("get", "/revisions/2/diff").get_json()
    assert (diff["from"], diff["to"], diff["changed"]) == (1, 2, ["m"])
    assert "-      value: 1\n+      value: 2\n" in diff["unified"]
    assert api("get", "/revisions/2/diff?against=0").get_json()["added"] == ["m"]


def test_dataplanes_register_list_get_delete(api):
    created = api("post", "/dataplanes", json={"address": "127.0.0.1:8500"})
    assert created.status_code == 201
    plane = created.get_json()
    assert plane["address"] == "127.0.0.1:8500"
    assert plane["state"] == "pending"
    assert plane["applied_revision"] is None
    assert plane["last_error"] is None
    assert plane["last_seen"] is None
    assert plane["models"] == {}
    duplicate = api("post", "/dataplanes", json={"address": "127.0.0.1:8500"})
    assert duplicate.status_code == 409
    bad_addresses = ["nohost", "h:0", "h:99999", "unix:/var/run/docker.sock", "ipv4:10.0.0.1:1"]
    for bad in [{}, *({"address": a} for a in bad_addresses)]:
        response = api("post", "/dataplanes", json=bad)
        assert response.status_code == 400
        assert response.get_json()["field"] == "address"
        assert "host:port" in response.get_json()["error"] or "port" in response.get_json()["error"]
    by_dns = api("post", "/dataplanes", json={"address": "dns:///dataplane:8500"})
    assert (by_dns.status_code, by_dns.get_json()["address"]) == (201, "dns:///dataplane:8500")
    assert api("delete", f"/dataplanes/{by_dns.get_json()['id']}").status_code == 204
    listed = api("get", "/dataplanes").get_json()["dataplanes"]
    assert [p["id"] for p in listed] == [plane["id"]]
    detail = api("get", f"/dataplanes/{plane['id']}").get_json()
    assert detail["push_results"] == []
    assert api("delete", f"/dataplanes/{plane['id']}").status_code == 204
    assert api("get", "/dataplanes").get_json() == {"dataplanes": []}


def test_audit_log_records_who_did_what(api):
    create(api)
    api("post", "/dataplanes", json={"address": "10.0.0.1:8500"})
    entries = api("get", "/audit").get_json()["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("token:tests", "dataplane.add", "10.0.0.1:8500"),
        ("token:tests", "model.create", "m"),
        ("cli", "token.create", "tests"),
    ]
    assert entries[1]["revision"] == 1
    api("post", "/push")
    forced = api("get", "/audit?limit=1").get_json()["entries"]
    assert [(e["actor"], e["action"]) for e in forced] == [("token:tests", "push.force")]


def test_a_failing_write_leaves_nothing_half_written(api, db):
    """Break the audit table for real: the model insert and the revision roll back with it."""
    create(api)
    with db.transaction() as session:
        session.execute(text("DROP TABLE audit_log"))
    response = api("post", "/models", json={**MODEL, "name": "n"})
    assert response.status_code == 503
    assert response.get_json() == {"error": "database unavailable"}
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(ModelConfigRow)) == 1
        assert session.scalar(select(func.max(Revision.number))) == 1
        assert session.scalar(text("SELECT revision FROM config_head")) == 1


def test_database_down_is_503(settings, db):
    from dataclasses import replace

    from controlplane.app import create_app

    down = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    app = create_app(replace(settings, database_url=down))
    client = app.test_client()
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json() == {"status": "unavailable", "database": False}
    response = client.get("/api/v1/models", headers={"Authorization": "Bearer mp_x"})
    assert response.status_code == 503
    assert response.get_json() == {"error": "database unavailable"}


# -- scopes and credentials -------------------------------------------------------------------


@pytest.fixture
def scoped(app, db):
    """`scoped("read")` -> `call(method, path, **kwargs)` with a fresh token of that scope."""

    def make(scope: str):
        token = auth.create_token(db, f"{scope}-token", scope)
        client = app.test_client()

        def call(method: str, path: str, **kwargs):
            headers = {"Authorization": f"Bearer {token}"}
            return getattr(client, method)(f"/api/v1{path}", headers=headers, **kwargs)

        return call

    return make


def test_read_tokens_may_only_read(api, scoped):
    create(api)
    read = scoped("read")
    for path in ("/models", "/models/m", "/revisions", "/revisions/1", "/dataplanes"):
        assert read("get", path).status_code == 200, path
    refused = read("put", "/models/m/labels/stable", json={"version": 2})
    assert refused.status_code == 403
    assert refused.get_json() == {
        "error": "this call needs a token with the write scope; this token has read"
    }
    assert read("delete", "/models/m").status_code == 403
    assert read("post", "/revisions/1/rollback").status_code == 403
    for path in ("/audit", "/tokens", "/admins"):
        assert read("get", path).status_code == 403, path
    assert api("get", "/models/m").get_json()["version_labels"] == {"stable": 1}


def test_write_tokens_change_models_and_labels_but_not_planes_or_credentials(api, scoped):
    write = scoped("write")
    assert write("post", "/models", json=MODEL).status_code == 201
    assert write("put", "/models/m/labels/canary", json={"version": 2}).status_code == 200
    assert write("delete", "/models/m/labels/canary").status_code == 200
    assert write("post", "/revisions/1/rollback").status_code == 201
    admin_only = [
        ("post", "/dataplanes", {"json": {"address": "10.0.0.1:8500"}}),
        ("delete", "/dataplanes/1", {}),
        ("post", "/push", {}),
        ("get", "/audit", {}),
        ("get", "/tokens", {}),
        ("post", "/tokens", {"json": {"name": "x", "scope": "read"}}),
        ("post", "/tokens/tests/revoke", {}),
        ("get", "/admins", {}),
        ("post", "/admins/alice/disable", {}),
    ]
    for method, path, kwargs in admin_only:
        response = write(method, path, **kwargs)
        assert response.status_code == 403, (method, path)
        assert "needs a token with the admin scope" in response.get_json()["error"]
    assert api("get", "/dataplanes").get_json() == {"dataplanes": []}


def test_admin_tokens_create_list_and_revoke_tokens(api, app):
    made = api("post", "/tokens", json={"name": "ci", "scope": "write", "expires_in_days": 30})
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    secret = body.pop("token")
    assert secret.startswith("mp_")
    assert (body["name"], body["scope"], body["state"]) == ("ci", "write", "active")
    assert body["expires_at"] is not None and body["last_used_at"] is None
    client = app.test_client()
    as_ci = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/models", headers=as_ci).status_code == 200
    listed = {t["name"]: t for t in api("get", "/tokens").get_json()["tokens"]}
    assert set(listed) == {"ci", "tests"}
    assert listed["ci"]["last_used_at"] is not None
    assert all(secret not in str(t) for t in listed.values())
    for bad, message in [
        ({"name": "ci", "scope": "read"}, "already exists"),
        ({"name": "y", "scope": "owner"}, "scope: must be one of read, write, admin"),
        ({"name": "y", "scope": "read", "expires_in_days": 0}, "from 1 to 3650"),
        ({"name": "", "scope": "read"}, "must not be empty"),
    ]:
        response = api("post", "/tokens", json=bad)
        assert response.status_code in (400, 409)
        assert message in response.get_json()["error"]
    revoked = api("post", "/tokens/ci/revoke")
    assert revoked.status_code == 200
    assert revoked.get_json()["state"] == "revoked"
    after = client.get("/api/v1/models", headers=as_ci)
    assert after.status_code == 401
    assert after.get_json() == {"error": "token revoked"}
    assert api("post", "/tokens/ci/revoke").status_code == 409
    assert api("post", "/tokens/nope/revoke").status_code == 404
    actions = [(e["action"], e["target"]) for e in api("get", "/audit").get_json()["entries"]]
    assert actions[:2] == [("token.revoke", "ci"), ("token.create", "ci")]


def test_expired_tokens_are_401(app, db):
    from datetime import timedelta

    from sqlalchemy import update

    from controlplane.models import ApiToken, utcnow

    token = auth.create_token(db, "brief", "admin", expires_in_days=1)
    with db.transaction() as session:
        session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(minutes=1)))
    response = app.test_client().get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.get_json() == {"error": "token expired"}


def test_admin_tokens_list_and_disable_admins(api, db):
    alice = auth.create_admin(db, "alice", "correct horse")
    auth.create_admin(db, "bob", "battery staple")
    listed = api("get", "/admins").get_json()["admins"]
    assert [(a["username"], a["state"]) for a in listed] == [("alice", "active"), ("bob", "active")]
    disabled = api("post", "/admins/alice/disable")
    assert disabled.status_code == 200
    assert disabled.get_json()["state"] == "disabled"
    assert auth.load_principal(db, alice.get_id()) is None
    assert api("post", "/admins/alice/disable").status_code == 409
    assert api("post", "/admins/nobody/disable").status_code == 404
    entry = api("get", "/audit?limit=1").get_json()["entries"][0]
    assert (entry["actor"], entry["action"], entry["target"]) == (
        "token:tests",
        "admin.disable",
        "alice",
    )


LOGGING = {
    "sampling_config": {"sampling_rate": 0.25},
    "log_collector_config": {"type": "jsonl", "filename_prefix": f"{LOG_ROOT}/m/requests"},
}


def test_logging_config_is_created_read_updated_and_removed(api, db):
    created = create(api, {**MODEL, "logging_config": LOGGING})
    assert created == {**MODEL, "logging_config": LOGGING, "revision": 1}
    assert api("get", "/models/m").get_json()["logging_config"] == LOGGING
    with db.transaction() as session:
        row = session.scalar(select(ModelConfigRow))
        assert (row.log_sampling_rate, row.log_collector_type, row.log_filename_prefix) == (
            0.25,
            "jsonl",
            f"{LOG_ROOT}/m/requests",
        )
    tfrecord = {
        "sampling_config": {"sampling_rate": 1.0},
        "log_collector_config": {"type": "", "filename_prefix": f"{LOG_ROOT}/m/all"},
    }
    updated = api("put", "/models/m", json={**MODEL, "logging_config": tfrecord}).get_json()
    assert (updated["logging_config"], updated["revision"]) == (tfrecord, 2)
    config = api("get", "/revisions/2").get_json()["model_server_config"]
    assert (
        "    logging_config {\n"
        "      log_collector_config {\n"
        f'        filename_prefix: "{LOG_ROOT}/m/all"\n'
        "      }\n"
        "      sampling_config {\n"
        "        sampling_rate: 1.0\n"
        "      }\n"
        "    }\n"
    ) in config
    removed = api("put", "/models/m", json=MODEL).get_json()
    assert "logging_config" not in removed
    assert "logging_config" not in api("get", "/revisions/3").get_json()["model_server_config"]
    diff = api("get", "/revisions/3/diff").get_json()
    assert diff["changed"] == ["m"]
    assert f'-        filename_prefix: "{LOG_ROOT}/m/all"\n' in diff["unified"]
    assert "-        sampling_rate: 1.0\n" in diff["unified"]
    rolled = api("post", "/revisions/1/rollback").get_json()
    assert rolled["rollback_of"] == 1
    assert api("get", "/models/m").get_json()["logging_config"] == LOGGING


@pytest.mark.parametrize(
    ("logging", "field", "message"),
    [
        (
            {"sampling_config": {"sampling_rate": 1.5}},
            "logging_config.sampling_config.sampling_rate",
            "must be between 0 and 1, got 1.5",
        ),
        (
            {"sampling_config": {"sampling_rate": -0.1}},
            "logging_config.sampling_config.sampling_rate",
            "must be between 0 and 1, got -0.1",
        ),
        (
            {"log_collector_config": {"type": "kafka", "filename_prefix": f"{LOG_ROOT}/m"}},
            "logging_config.log_collector_config.type",
            "must be one of ['', 'tfrecord', 'jsonl'], got 'kafka'",
        ),
        (
            {"sampling_config": {"sampling_rate": 0.5}},
            "logging_config.log_collector_config.filename_prefix",
            "is required",
        ),
        (
            {"log_collector_config": {"filename_prefix": "logs/m"}},
            "logging_config.log_collector_config.filename_prefix",
            "must be an absolute path to a file name prefix, e.g. /logs/m",
        ),
        (
            {"log_collector_config": {"filename_prefix": f"{LOG_ROOT}/../../etc/m"}},
            "logging_config.log_collector_config.filename_prefix",
            "must be a normalized path (no '..', '.', '//')",
        ),
        (
            {"log_collector_config": {"filename_prefix": "/etc/cron.d/m"}},
            "logging_config.log_collector_config.filename_prefix",
            f"must be under one of ['{LOG_ROOT}']",
        ),
        (
            {"log_collector_config": {"filename_prefix": f"{LOG_ROOT}-evil/m"}},
            "logging_config.log_collector_config.filename_prefix",
            f"must be under one of ['{LOG_ROOT}']",
        ),
        (
            {"log_collector_config": {"filename_prefix": f"{LOG_ROOT}/m\nx"}},
            "logging_config.log_collector_config.filename_prefix",
            "must not contain control characters",
        ),
        (
            {"sampling_config": {"sampling_rate": "often"}},
            "logging_config",
            "Failed to parse logging_config field",
        ),
    ],
)
def test_bad_logging_configs_are_400_and_change_nothing(api, logging, field, message):
    response = api("post", "/models", json={**MODEL, "logging_config": logging})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error.startswith(f"{field}: {message}"), error
    assert api("get", "/models").get_json() == {"models": []}
    assert api("get", "/revisions").get_json()["revisions"] == []
