"""The control plane proves itself to secured data planes: bearer token and TLS, read from the
files the environment names, checked by in-process gRPC planes (fake_dataplane.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from controlplane import planes, store
from controlplane import revisions as rv
from controlplane.config import DataPlaneAuth, Settings
from controlplane.credentials import CredentialsError, PlaneCredentials
from controlplane.db import Database
from controlplane.fleet import Fleet
from tests.controlplane.fake_dataplane import FakeDataPlane, ServerTls
from tests.support.tls import Pki, make_pki

MODEL = {
    "name": "m",
    "base_path": "/models/m",
    "model_version_policy": {"specific": {"versions": [1]}},
}
TOKEN = "fleet-admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fakes() -> Iterator[list[FakeDataPlane]]:
    started: list[FakeDataPlane] = []
    yield started
    for fake in started:
        fake.stop()


def synced_with(db: Database, settings: Settings, fake: FakeDataPlane, auth: DataPlaneAuth):
    """One cycle of a fleet using `auth` against `fake`; returns the plane's reported state."""
    planes.add_plane(db, fake.address, "test")
    store.create_model(db, rv.parse_model_config(MODEL), "t")
    fleet = Fleet(db, replace(settings, dataplane_auth=auth))
    try:
        fleet.cycle()
    finally:
        fleet.stop()
    head = store.head(db).number
    return next(p.to_json(head) for p in planes.list_planes(db) if p.address == fake.address)


# -- loading ----------------------------------------------------------------------------------


def test_token_comes_from_the_variable_or_the_file(tmp_path: Path):
    assert PlaneCredentials.load(DataPlaneAuth(token=f" {TOKEN}\n")).metadata == (
        ("authorization", f"Bearer {TOKEN}"),
    )
    (tmp_path / "token").write_text(TOKEN + "\n")
    loaded = PlaneCredentials.load(DataPlaneAuth(token_file=str(tmp_path / "token")))
    assert loaded.metadata == (("authorization", f"Bearer {TOKEN}"),)
    assert loaded.tls is False
    assert PlaneCredentials.load(DataPlaneAuth()).metadata == ()


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (DataPlaneAuth(token="a", token_file="/etc/hostname"), "not both"),
        (DataPlaneAuth(token_file="/nonexistent/token"), "MODELPLANE_DATAPLANE_TOKEN_FILE: cannot"),
        (DataPlaneAuth(ca_file="/nonexistent/ca.pem"), "MODELPLANE_DATAPLANE_CA_FILE: cannot"),
        (DataPlaneAuth(cert_file="/etc/hostname"), "go together"),
    ],
)
def test_unusable_settings_are_refused_with_the_variable_to_fix(auth, message):
    with pytest.raises(CredentialsError, match=message):
        PlaneCredentials.load(auth)


def test_an_empty_token_file_is_refused(tmp_path: Path):
    (tmp_path / "token").write_text("\n")
    with pytest.raises(CredentialsError, match="is empty"):
        PlaneCredentials.load(DataPlaneAuth(token_file=str(tmp_path / "token")))


# -- against secured planes -------------------------------------------------------------------


def test_the_token_is_sent_on_admin_calls_and_the_plane_syncs(db, settings, fakes):
    fake = FakeDataPlane(token=TOKEN)
    fakes.append(fake)
    reported = synced_with(db, settings, fake, DataPlaneAuth(token=TOKEN))
    assert reported["state"] == "in_sync"
    assert len(fake.reloads) == 1
    assert fake.authorizations and set(fake.authorizations) == {f"Bearer {TOKEN}"}


def test_without_the_token_the_plane_refuses_and_nothing_is_applied(db, settings, fakes):
    fake = FakeDataPlane(token=TOKEN)
    fakes.append(fake)
    reported = synced_with(db, settings, fake, DataPlaneAuth())
    assert reported["state"] == "unreachable"
    assert reported["last_error"] == "UNAUTHENTICATED: missing or wrong admin token"
    assert fake.reloads == []
    assert set(fake.authorizations) == {""}


def test_tls_with_the_fleet_ca(db, settings, fakes, pki: Pki):
    fake = FakeDataPlane(tls=ServerTls(pki.read("server.key"), pki.read("server.pem")))
    fakes.append(fake)
    auth = DataPlaneAuth(token=TOKEN, ca_file=str(pki.path("ca.pem")))
    assert synced_with(db, settings, fake, auth)["state"] == "in_sync"
    assert set(fake.authorizations) == {f"Bearer {TOKEN}"}


def test_tls_client_certificate_when_the_plane_requires_one(db, settings, fakes, pki: Pki):
    tls = ServerTls(pki.read("server.key"), pki.read("server.pem"), client_ca=pki.read("ca.pem"))
    fake = FakeDataPlane(tls=tls)
    fakes.append(fake)
    auth = DataPlaneAuth(
        ca_file=str(pki.path("ca.pem")),
        cert_file=str(pki.path("client.pem")),
        key_file=str(pki.path("client.key")),
    )
    assert synced_with(db, settings, fake, auth)["state"] == "in_sync"
    assert len(fake.reloads) == 1


def test_plain_text_to_a_tls_plane_gets_nothing_through(db, settings, fakes, pki: Pki):
    fake = FakeDataPlane(tls=ServerTls(pki.read("server.key"), pki.read("server.pem")))
    fakes.append(fake)
    reported = synced_with(db, settings, fake, DataPlaneAuth(token=TOKEN))
    assert reported["state"] == "unreachable"
    assert fake.reloads == [] and fake.authorizations == []
