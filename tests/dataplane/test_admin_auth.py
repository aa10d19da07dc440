"""admin_auth: who may make admin calls, from the metadata a call carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplane.admin_auth import OPEN, AdminAuth, AdminTokenError, read_admin_auth

TOKEN = "s3cr3t-Token_0123456789"
CLOSED = AdminAuth(TOKEN.encode())


def bearer(value: str) -> list[tuple[str, str]]:
    return [("user-agent", "grpc-python"), ("authorization", value)]


def test_without_a_token_file_admin_calls_are_open() -> None:
    assert read_admin_auth("") is OPEN and OPEN.open
    assert OPEN.allows([], client_verified=False)


@pytest.mark.parametrize(
    "value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "], ids=str.split
)
def test_the_right_bearer_token_is_allowed(value: str) -> None:
    assert CLOSED.allows(bearer(value), client_verified=False)


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        bearer(""),
        bearer("Bearer"),
        bearer(TOKEN),  # no scheme
        bearer(f"Basic {TOKEN}"),
        bearer(f"Bearer {TOKEN[:-1]}"),
        bearer(f"Bearer {TOKEN}x"),
        bearer(f"Bearer {TOKEN.lower()}"),
        [("x-authorization", f"Bearer {TOKEN}")],
    ],
    ids=["none", "empty", "scheme-only", "no-scheme", "basic", "short", "long", "case", "key"],
)
def test_a_missing_or_wrong_token_is_refused(metadata: list[tuple[str, str]]) -> None:
    assert not CLOSED.allows(metadata, client_verified=False)


def test_one_right_value_among_several_is_enough() -> None:
    metadata = [*bearer("Bearer wrong"), ("authorization", f"Bearer {TOKEN}")]
    assert CLOSED.allows(metadata, client_verified=False)


def test_a_verified_client_certificate_stands_in_for_the_token() -> None:
    assert CLOSED.allows([], client_verified=True)


def test_the_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    auth = read_admin_auth(str(path))
    assert auth.token == TOKEN.encode() and not auth.open


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"cannot read --admin_token_file .*/token: No such file or directory"),
        (" \n", r"--admin_token_file .*/token is empty"),
        ("two words", r"printable ASCII without spaces"),
        ("t\u00f6ken", r"printable ASCII without spaces"),
    ],
    ids=["missing", "empty", "space", "non-ascii"],
)
def test_an_unusable_token_file_is_an_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AdminTokenError, match=message):
        read_admin_auth(str(path))
