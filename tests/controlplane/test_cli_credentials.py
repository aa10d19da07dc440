"""The credential commands through the real CLI (a subprocess per command), on both backends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from controlplane import audit, auth
from controlplane.db import Database
from tests.support.processes import REPO_ROOT


def cli(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controlplane", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # a dozen CLI processes, each importing the control plane
def test_cli_creates_scoped_tokens_and_admins_then_revokes_and_disables(database_url: str):
    assert cli(database_url, "db", "upgrade").returncode == 0
    assert cli(database_url, "db", "upgrade").returncode == 0  # idempotent
    made = cli(database_url, "create-token", "--name", "deploy", "--scope", "write")
    assert made.returncode == 0, made.stderr
    assert "created write API token 'deploy'" in made.stderr
    token = made.stdout.strip().splitlines()[-1]
    brief = cli(
        database_url, "create-token", "--name", "brief", "--scope", "read", "--expires-in-days", "7"
    )
    assert brief.returncode == 0, brief.stderr
    admin = cli(
        database_url, "create-admin", "--username", "root", "--password-stdin",
        stdin="s3cret-password\n",
    )  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    refusals = [
        (("create-token", "--name", "deploy", "--scope", "read"), "already exists"),
        (("create-token", "--name", "x"), "--scope"),
        (("create-token", "--name", "x", "--scope", "root"), "invalid choice"),
        (("create-token", "--name", "x", "--scope", "read", "--expires-in-days", "0"), "1 to"),
        (("revoke-token", "--name", "missing"), "not found"),
        (("disable-admin", "--username", "nobody"), "not found"),
    ]
    for args, message in refusals:
        refused = cli(database_url, *args)
        assert refused.returncode != 0, args
        assert message in refused.stderr, (args, refused.stderr)
    db = Database(database_url)
    try:
        assert auth.authenticate_token(db, token).scope == "write"
        assert auth.get_token(db, "brief").expires_at is not None
        assert auth.verify_admin(db, "root", "s3cret-password").name == "root"
        revoked = cli(database_url, "revoke-token", "--name", "deploy")
        assert revoked.returncode == 0, revoked.stderr
        assert auth.get_token(db, "deploy").state() == "revoked"
        disabled = cli(database_url, "disable-admin", "--username", "root")
        assert disabled.returncode == 0, disabled.stderr
        assert auth.verify_admin(db, "root", "s3cret-password") is None
        entries = [(e["actor"], e["action"], e["target"]) for e in audit.recent(db)]
        assert entries == [
            ("cli", "admin.disable", "root"),
            ("cli", "token.revoke", "deploy"),
            ("cli", "token.create", "brief"),
            ("cli", "token.create", "deploy"),
        ]
    finally:
        db.dispose()
