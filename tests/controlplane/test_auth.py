"""Tokens and admin users through the library: scopes, expiry, revocation, last use, disabled
admins, and throttled, audited sign-ins whose password check holds no database connection."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from controlplane import audit, auth, throttle
from controlplane.config import LoginThrottle
from controlplane.db import Database
from controlplane.models import AdminUser, ApiToken, utcnow
from controlplane.store import Conflict, NotFound

POLICY = LoginThrottle()


def test_tokens_are_stored_only_as_a_hash(db: Database):
    token = auth.create_token(db, "ci", "write")
    assert token.startswith("mp_")
    assert len(token) > 40
    with db.transaction() as session:
        row = session.scalar(select(ApiToken))
        assert row.token_hash == auth.hash_token(token)
        assert token not in (row.token_hash, row.name)
        assert (row.scope, row.expires_at, row.revoked) == ("write", None, False)
    principal = auth.authenticate_token(db, token)
    assert principal == auth.Principal("token", row.id, "ci", "write")
    assert principal.label == "token:ci"
    for wrong in (token + "x", "garbage", ""):
        with pytest.raises(auth.Refused, match="missing or invalid bearer token"):
            auth.authenticate_token(db, wrong)
    with pytest.raises(Conflict):
        auth.create_token(db, "ci", "read")
    created = audit.recent(db)[0]
    assert (created["actor"], created["action"], created["target"]) == ("cli", "token.create", "ci")
    assert created["detail"] == {"scope": "write", "expires_at": None}


def test_scopes_are_ordered_read_write_admin():
    assert auth.allows("admin", "admin") and auth.allows("admin", "read")
    assert auth.allows("write", "write") and auth.allows("write", "read")
    assert not auth.allows("write", "admin")
    assert auth.allows("read", "read")
    assert not auth.allows("read", "write") and not auth.allows("read", "admin")


@pytest.mark.parametrize(
    ("name", "scope", "days", "message"),
    [
        ("", "read", None, "must not be empty"),
        ("x" * 129, "read", None, "at most 128"),
        ("new\nline", "read", None, "printable"),
        ("t", "root", None, "scope: must be one of read, write, admin"),
        ("t", None, None, "scope: must be one of"),
        ("t", "read", 0, "from 1 to 3650"),
        ("t", "read", 3651, "from 1 to 3650"),
        ("t", "read", True, "from 1 to 3650"),
        ("t", "read", "7", "from 1 to 3650"),
    ],
)
def test_token_inputs_are_bounded(db: Database, name, scope, days, message):
    with pytest.raises(ValueError, match=message):
        auth.create_token(db, name, scope, days)
    assert auth.list_tokens(db) == []


def test_revoked_tokens_are_refused_and_stay_listed(db: Database):
    token = auth.create_token(db, "old", "admin")
    assert auth.authenticate_token(db, token).scope == "admin"
    revoked = auth.revoke_token(db, "old", "admin:alice")
    assert revoked.revoked and revoked.state() == "revoked"
    assert revoked.revoked_at is not None
    with pytest.raises(auth.Refused, match=r"^token revoked$"):
        auth.authenticate_token(db, token)
    assert [t.to_json()["state"] for t in auth.list_tokens(db)] == ["revoked"]
    with pytest.raises(Conflict, match="already revoked"):
        auth.revoke_token(db, "old", "admin:alice")
    with pytest.raises(NotFound):
        auth.revoke_token(db, "never-made", "admin:alice")
    entry = audit.recent(db)[0]
    assert (entry["actor"], entry["action"], entry["target"]) == (
        "admin:alice",
        "token.revoke",
        "old",
    )


def test_tokens_expire(db: Database):
    token = auth.create_token(db, "short", "read", expires_in_days=1)
    info = auth.get_token(db, "short")
    lifetime = throttle.aware(info.expires_at) - throttle.aware(info.created_at)
    assert lifetime == timedelta(days=1)
    assert auth.authenticate_token(db, token).name == "short"
    with db.transaction() as session:
        session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(auth.Refused, match=r"^token expired$"):
        auth.authenticate_token(db, token)
    assert auth.get_token(db, "short").to_json()["state"] == "expired"


def test_last_used_is_written_at_most_once_a_minute(db: Database):
    """Calls with one token are reads: the time is rewritten only once it is a minute old."""
    token = auth.create_token(db, "busy", "read")
    writes: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.startswith("UPDATE api_tokens SET last_used_at") and "IS NULL" in statement:
            writes.append(statement)  # the conditional update of auth._mark_used

    event.listen(db.engine, "before_cursor_execute", count)
    for _ in range(20):
        auth.authenticate_token(db, token)
    assert len(writes) == 1
    first = auth.get_token(db, "busy").last_used_at
    assert first is not None
    two_minutes_ago = utcnow() - timedelta(minutes=2)
    with db.transaction() as session:
        session.execute(update(ApiToken).values(last_used_at=two_minutes_ago))
    auth.authenticate_token(db, token)
    assert len(writes) == 2
    assert throttle.aware(auth.get_token(db, "busy").last_used_at) > two_minutes_ago


def test_bearer_header_parsing():
    assert auth.bearer_token("Bearer abc") == "abc"
    assert auth.bearer_token("bearer  abc ") == "abc"
    assert auth.bearer_token("Basic abc") is None
    assert auth.bearer_token("Bearer ") is None
    assert auth.bearer_token(None) is None


def test_admin_users_have_salted_hashes_and_work_as_flask_login_users(db: Database):
    created = auth.create_admin(db, "alice", "correct horse")
    with db.transaction() as session:
        stored = session.scalar(select(AdminUser)).password_hash
    assert "correct horse" not in stored
    assert stored.startswith(("scrypt:", "pbkdf2:"))
    assert auth.verify_admin(db, "alice", "correct horse") == created
    assert auth.verify_admin(db, "alice", "wrong password") is None
    assert auth.verify_admin(db, "bob", "correct horse") is None
    assert created.get_id() == f"admin:{created.id}"
    assert created.is_authenticated and created.is_active and not created.is_anonymous
    assert auth.load_principal(db, created.get_id()) == created
    assert auth.load_principal(db, "admin:999") is None
    assert auth.load_principal(db, "token:1") is None
    with pytest.raises(ValueError, match="at least 8"):
        auth.create_admin(db, "bob", "short")
    with pytest.raises(Conflict):
        auth.create_admin(db, "alice", "another password")


def test_unknown_or_inactive_admins_cost_the_same_hash_check(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    """No username enumeration by timing: every login checks one hash of the same cost."""
    auth.create_admin(db, "alice", "correct horse")
    auth.create_admin(db, "carol", "correct horse")
    with db.transaction() as session:
        session.scalar(select(AdminUser).where(AdminUser.username == "carol")).active = False
    methods: list[str] = []
    check = auth.check_password_hash

    def counted(pwhash: str, password: str) -> bool:
        methods.append(pwhash.split("$", 1)[0])  # e.g. "scrypt:32768:8:1": method and cost
        return check(pwhash, password)

    monkeypatch.setattr(auth, "check_password_hash", counted)

    assert auth.verify_admin(db, "alice", "wrong password") is None
    assert auth.verify_admin(db, "bob", "correct horse") is None
    assert auth.verify_admin(db, "carol", "correct horse") is None
    assert len(methods) == 3 and len(set(methods)) == 1


def test_disabled_admins_cannot_sign_in_and_their_sessions_end(db: Database):
    alice = auth.create_admin(db, "alice", "correct horse")
    bob = auth.create_admin(db, "bob", "battery staple")
    assert auth.load_principal(db, bob.get_id()) == bob
    disabled = auth.disable_admin(db, "bob", alice.label)
    assert disabled.to_json()["state"] == "disabled"
    assert auth.load_principal(db, bob.get_id()) is None  # the open session ends
    assert auth.verify_admin(db, "bob", "battery staple") is None
    assert auth.load_principal(db, alice.get_id()) == alice
    with pytest.raises(Conflict, match="already disabled"):
        auth.disable_admin(db, "bob", alice.label)
    with pytest.raises(NotFound):
        auth.disable_admin(db, "carol", alice.label)
    assert [(a.username, a.active) for a in auth.list_admins(db)] == [
        ("alice", True),
        ("bob", False),
    ]
    entry = audit.recent(db)[0]
    assert (entry["actor"], entry["action"], entry["target"]) == (
        "admin:alice",
        "admin.disable",
        "bob",
    )


def test_passwords_are_checked_holding_no_database_connection(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    """scrypt takes tens of ms: holding a transaction (SQLite: the write lock) across it
    would let a login flood stall every writer. While it runs, no connection is checked out."""
    auth.create_admin(db, "alice", "correct horse")
    held: list[int] = []
    check = auth.check_password_hash

    def watched(pwhash: str, password: str) -> bool:
        held.append(db.engine.pool.checkedout())
        return check(pwhash, password)

    monkeypatch.setattr(auth, "check_password_hash", watched)
    assert auth.verify_admin(db, "alice", "correct horse").name == "alice"
    assert auth.sign_in(db, POLICY, "alice", "wrong", "10.0.0.1").principal is None
    assert auth.sign_in(db, POLICY, "nobody", "wrong", "10.0.0.1").principal is None
    assert held == [0, 0, 0]


def test_sign_ins_are_audited_and_throttled_per_address_and_per_user(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    auth.create_admin(db, "alice", "correct horse")
    checks: list[str] = []
    check = auth.check_password_hash

    def counted(pwhash: str, password: str) -> bool:
        checks.append(password)
        return check(pwhash, password)

    monkeypatch.setattr(auth, "check_password_hash", counted)
    ok = auth.sign_in(db, POLICY, "alice", "correct horse", "10.0.0.1")
    assert ok.principal.name == "alice" and ok.retry_after == 0
    # Four failures from one address on four user names: none is blocked yet.
    for name in ("a", "b", "c", "d"):
        assert auth.sign_in(db, POLICY, name, "guess", "10.0.0.2") == auth.SignIn(None)
    # The fifth failure from the address blocks it: the sixth is refused before any check.
    assert auth.sign_in(db, POLICY, "e", "guess", "10.0.0.2") == auth.SignIn(None)
    checks.clear()
    refused = auth.sign_in(db, POLICY, "alice", "correct horse", "10.0.0.2")
    assert refused.principal is None and 55 <= refused.retry_after <= 60
    assert checks == []
    # Another address still signs alice in.
    assert auth.sign_in(db, POLICY, "alice", "correct horse", "10.0.0.3").principal is not None
    # Five failures on one user name from five addresses block the name everywhere.
    for n in range(5):
        assert auth.sign_in(db, POLICY, "alice", "guess", f"10.1.0.{n}").retry_after == 0
    assert auth.sign_in(db, POLICY, "alice", "correct horse", "10.2.0.1").retry_after > 0
    entries = audit.recent(db)
    actions = [e["action"] for e in reversed(entries)]
    assert actions.count("login.success") == 2
    assert actions.count("login.failure") == 10
    blocked = [e for e in entries if e["action"] == "login.blocked"]
    assert [e["target"] for e in blocked] == ["user:alice", "addr:10.0.0.2"]
    assert blocked[1]["detail"] == {"seconds": 60, "address": "10.0.0.2"}
    failure = next(e for e in entries if e["action"] == "login.failure")
    assert failure["actor"] == "anonymous" and failure["detail"] == {"address": "10.1.0.4"}


def test_a_successful_sign_in_clears_its_user_name_only(db: Database):
    auth.create_admin(db, "alice", "correct horse")
    for _ in range(4):
        auth.sign_in(db, POLICY, "alice", "guess", "10.0.0.9")
    assert auth.sign_in(db, POLICY, "alice", "correct horse", "10.0.0.9").principal
    with db.transaction() as session:
        user_key, address_key = throttle.keys("10.0.0.1", "alice")[1], "addr:10.0.0.9"
        rows = {row.key: row.failures for row in session.scalars(select(throttle.ThrottleRow))}
    assert user_key not in rows
    assert rows[address_key] == 4
    # One more failure from that address blocks it, whatever user name it tries.
    auth.sign_in(db, POLICY, "zed", "guess", "10.0.0.9")
    assert auth.sign_in(db, POLICY, "alice", "correct horse", "10.0.0.9").retry_after > 0


def test_concurrent_guesses_get_no_more_checks_than_the_limit(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    """Twenty guesses at once for one user name (each from its own address): attempts are
    counted before their password is checked, so only five are ever checked."""
    import threading

    auth.create_admin(db, "alice", "correct horse")
    checks: list[str] = []
    check = auth.check_password_hash

    def counted(pwhash: str, password: str) -> bool:
        checks.append(password)
        return check(pwhash, password)

    monkeypatch.setattr(auth, "check_password_hash", counted)
    barrier = threading.Barrier(20)
    results: list[auth.SignIn] = []

    def guess(n: int) -> None:
        barrier.wait(30)
        results.append(auth.sign_in(db, POLICY, "alice", f"guess {n}", f"10.3.0.{n}"))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 20
    assert len(checks) == 5
    assert sum(r.retry_after > 0 for r in results) == 15
    assert all(r.principal is None for r in results)
