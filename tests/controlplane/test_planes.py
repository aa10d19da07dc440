"""Data-plane rows: which addresses may be registered, what is clipped, how history is pruned."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controlplane import planes
from controlplane.db import Database
from controlplane.models import PushResult
from controlplane.revisions import ValidationError


@pytest.mark.parametrize(
    "address",
    [
        "dataplane-1:8500",
        "10.0.0.7:8500",
        "[::1]:8500",
        "dns:///dataplane.modelplane.svc.cluster.local:8500",
        " padded.example:1 ",
    ],
)
def test_host_port_and_dns_targets_are_accepted(address: str):
    assert planes.validate_address(address) == address.strip()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("unix:/var/run/docker.sock", "must be host:port or dns:///host:port"),
        ("unix:///tmp/grpc.sock", "must be host:port or dns:///host:port"),
        ("ipv4:127.0.0.1:8500", "must be host:port or dns:///host:port"),
        ("dns://8.8.8.8/evil:8500", "must be host:port or dns:///host:port"),
        ("dataplane", "must be host:port or dns:///host:port"),
        ("host:0", "port must be between 1 and 65535"),
        ("host:65536", "port must be between 1 and 65535"),
        ("a" * 250 + ".example:8500", "must be at most 255 characters"),
        (8500, "must be host:port or dns:///host:port"),
    ],
)
def test_other_targets_are_refused(address: object, message: str):
    with pytest.raises(ValidationError, match=message) as refused:
        planes.validate_address(address)
    assert refused.value.field == "address"


def test_clip_drops_nul_characters_and_cuts_long_text():
    assert planes.clip("a\x00b") == "ab"
    assert planes.clip("x" * 10, 8) == "xxxxx..."
    assert planes.clip("short", 8) == "short"


def test_push_history_keeps_the_newest_rows_of_each_plane(db: Database):
    first = planes.add_plane(db, "first:8500", "t")
    second = planes.add_plane(db, "second:8500", "t")
    for revision in range(1, 7):
        planes.record_step(db, first.id, revision, "final", "refused", 1, keep=3)
    for revision in range(1, 3):
        planes.record_step(db, second.id, revision, "final", None, 1, keep=3)
    assert [r["revision"] for r in planes.push_history(db, first.id)] == [6, 5, 4]
    assert [r["revision"] for r in planes.push_history(db, second.id)] == [2, 1]
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(PushResult)) == 5


def test_an_internal_error_releases_only_the_lease_its_pusher_holds(db: Database):
    plane = planes.add_plane(db, "leased:8500", "t")
    assert planes.acquire_lease(db, plane.id, "other-instance", 1, ttl_s=60)
    planes.record_internal_error(db, plane.id, "internal error: KeyError (see the log)", None)
    shown = planes.get_plane(db, plane.id)
    assert (shown.state, shown.last_error) == ("error", "internal error: KeyError (see the log)")
    assert not planes.acquire_lease(db, plane.id, "me", 1, ttl_s=60)  # still theirs
    planes.record_internal_error(db, plane.id, "internal error: KeyError", "other-instance")
    assert planes.acquire_lease(db, plane.id, "me", 1, ttl_s=60)
