"""The push/reconcile engine against in-process gRPC data planes (see fake_dataplane.py)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from controlplane import planes, store
from controlplane import revisions as rv
from controlplane.config import Settings
from controlplane.db import Database
from controlplane.fleet import Fleet, resolve_dns
from tests.controlplane.fake_dataplane import FakeDataPlane
from tests.support.processes import free_port

MODEL = {
    "name": "m",
    "base_path": "/models/m",
    "model_version_policy": {"specific": {"versions": [1]}},
    "version_labels": {"stable": 1},
}


@pytest.fixture
def fakes() -> Iterator[list[FakeDataPlane]]:
    started: list[FakeDataPlane] = []
    yield started
    for fake in started:
        fake.stop()


def start_fake(fakes: list[FakeDataPlane], db: Database, **kwargs) -> FakeDataPlane:
    fake = FakeDataPlane(**kwargs)
    fakes.append(fake)
    planes.add_plane(db, fake.address, "test")
    return fake


@pytest.fixture
def fleet(db: Database, settings: Settings) -> Iterator[Fleet]:
    engine = Fleet(db, settings)
    yield engine
    engine.stop()


def state(db: Database, address: str) -> dict:
    head = store.head(db).number
    return next(p.to_json(head) for p in planes.list_planes(db) if p.address == address)


def steps(db: Database, address: str) -> list[tuple[int, str, bool]]:
    plane_id = state(db, address)["id"]
    return [(r["revision"], r["step"], r["ok"]) for r in planes.push_history(db, plane_id)][::-1]


def test_first_push_steps_around_labels_then_serves_the_head(db, fleet, fakes):
    fake = start_fake(fakes, db)
    store.create_model(db, rv.parse_model_config(MODEL), "t")
    assert fleet.cycle() == 1
    head = store.head(db)
    assert fake.config == head.config
    assert [dict(r.config.model_config_list.config[0].version_labels) for r in fake.reloads] == [
        {},
        {"stable": 1},
    ]
    assert steps(db, fake.address) == [(1, "intermediate", True), (1, "final", True)]
    reported = state(db, fake.address)
    assert (reported["state"], reported["applied_revision"], reported["last_error"]) == (
        "in_sync",
        1,
        None,
    )
    fleet.cycle()
    assert len(fake.reloads) == 2  # in sync: nothing pushed again
    assert state(db, fake.address)["models"] == {"m": {"1": "AVAILABLE"}}


def test_label_move_waits_until_every_plane_has_the_version(db, fleet, fakes):
    fast = start_fake(fakes, db, load_delay_s=0.05)
    slow = start_fake(fakes, db, load_delay_s=1.0)
    store.create_model(db, rv.parse_model_config(MODEL), "t")
    fleet.cycle()
    both = {**MODEL, "model_version_policy": {"specific": {"versions": [1, 2]}}}
    moved = store.replace_model(
        db, rv.parse_model_config({**both, "version_labels": {"stable": 2}}), None, "t"
    )
    fleet.cycle()
    for fake in (fast, slow):
        stone, final = fake.reloads[-2:]
        stepped = stone.config.model_config_list.config[0]
        assert list(stepped.model_version_policy.specific.versions) == [1, 2]
        assert dict(stepped.version_labels) == {"stable": 1}
        assert final.config == store.head(db).config
        assert state(db, fake.address)["applied_revision"] == moved.revision
    # The label went out nowhere before version 2 was AVAILABLE everywhere.
    slow_ready = slow.available_at[("m", 2)]
    assert fast.reloads[-1].at >= slow_ready
    assert slow.reloads[-1].at >= slow_ready


def test_unreachable_plane_is_reported_while_the_other_syncs(db, fleet, fakes):
    good = start_fake(fakes, db)
    dead = f"127.0.0.1:{free_port()}"
    planes.add_plane(db, dead, "t")
    store.create_model(db, rv.parse_model_config(MODEL), "t")
    fleet.cycle()
    assert state(db, good.address)["state"] == "in_sync"
    down = state(db, dead)
    assert down["state"] == "unreachable"
    # Only the status code: gRPC's detail (address, socket error) stays in the log.
    assert down["last_error"] == "no answer (UNAVAILABLE)"
    assert down["applied_revision"] is None


def test_a_refused_config_is_an_error_and_not_retried(db, fleet, fakes):
    fake = start_fake(fakes, db, reject="bad config")
    store.create_model(db, rv.parse_model_config({**MODEL, "version_labels": {}}), "t")
    fleet.cycle()
    reported = state(db, fake.address)
    assert reported["state"] == "error"
    assert reported["last_error"] == "final: reload refused (code 3): bad config"
    plane_id = reported["id"]
    assert [(r["ok"], r["attempts"]) for r in planes.push_history(db, plane_id)] == [(False, 1)]
    fake.reject = ""
    fleet.cycle()  # backing off: a probe does not clear the error, and nothing is re-sent yet
    assert state(db, fake.address)["state"] == "error"
    assert len(fake.reloads) == 1
    time.sleep(fleet.settings.retry_backoff_s)
    fleet.cycle()
    assert state(db, fake.address)["state"] == "in_sync"


def test_restart_is_detected_and_the_head_re_pushed(db, fleet, fakes):
    fake = start_fake(fakes, db)
    store.create_model(db, rv.parse_model_config(MODEL), "t")
    fleet.cycle()
    first_incarnation = state(db, fake.address)["incarnation_id"]
    fake.reset()
    fleet.cycle()
    assert fake.config == store.head(db).config
    assert state(db, fake.address)["incarnation_id"] != first_incarnation
    assert state(db, fake.address)["state"] == "in_sync"


def test_stock_server_falls_back_to_model_status(db, fleet, fakes):
    fake = start_fake(fakes, db, stock=True)
    store.create_model(db, rv.parse_model_config(MODEL), "t")
    fleet.cycle()
    assert fake.config == store.head(db).config
    assert state(db, fake.address)["state"] == "in_sync"
    pushes = len(fake.reloads)
    fleet.cycle()
    assert len(fake.reloads) == pushes
    fake.reset()
    fleet.cycle()
    assert fake.config == store.head(db).config
    assert len(fake.reloads) == pushes + 2  # stepping stone and final again


def test_a_stale_pusher_never_overwrites_a_newer_revision(db, settings, fleet, fakes):
    fake = start_fake(fakes, db)
    store.create_model(db, rv.parse_model_config({**MODEL, "version_labels": {}}), "t")
    old_head = store.head(db)
    store.set_label(db, "m", "stable", 1, None, "t")
    fleet.cycle()
    assert fake.config == store.head(db).config
    other_process = Fleet(db, settings)
    try:
        target = other_process._probe(planes.list_planes(db)[0], old_head)
        other_process._push(old_head, [target])  # a process that still thinks 1 is the head
    finally:
        other_process.stop()
    assert fake.config == store.head(db).config
    assert state(db, fake.address)["applied_revision"] == 2


def test_discovery_from_env_and_dns(db, settings):
    answers = {"svc:8500": {"10.0.0.1:8500", "10.0.0.2:8500"}}
    config = replace(settings, dataplanes=("a:1", "b:2"), dataplanes_dns="svc:8500")
    engine = Fleet(db, replace(config, dns_refresh_s=0), resolver=lambda name: answers[name])
    try:
        engine.discover()
        found = {(p.address, p.source) for p in planes.list_planes(db)}
        assert found == {
            ("a:1", "env"),
            ("b:2", "env"),
            ("10.0.0.1:8500", "dns"),
            ("10.0.0.2:8500", "dns"),
        }
        answers["svc:8500"] = {"10.0.0.2:8500", "10.0.0.3:8500"}
        engine.discover()
        dns = {p.address for p in planes.list_planes(db) if p.source == "dns"}
        assert dns == {"10.0.0.2:8500", "10.0.0.3:8500"}
    finally:
        engine.stop()


def test_resolve_dns_returns_every_a_record():
    assert "127.0.0.1:8500" in resolve_dns("localhost:8500")


def test_push_endpoint_pushes_now_and_reports_states(db, api, fakes):
    fake = start_fake(fakes, db)
    created = api("post", "/models", json={**MODEL, "version_labels": {}}).get_json()
    response = api("post", "/push")
    assert response.status_code == 200
    body = response.get_json()
    assert body["revision"] == created["revision"] == 1
    assert [(p["address"], p["state"], p["applied_revision"]) for p in body["dataplanes"]] == [
        (fake.address, "in_sync", 1)
    ]
    assert fake.config == store.head(db).config
    again = api("post", "/push").get_json()  # forced: pushed again although in sync
    assert again["dataplanes"][0]["state"] == "in_sync"
    assert len(fake.reloads) == 2


# -- one plane cannot stop the others ---------------------------------------------------------


def test_a_plane_reporting_garbage_is_clipped_and_the_others_stay_in_sync(db, fleet, fakes):
    good = [start_fake(fakes, db), start_fake(fakes, db)]
    garbage = start_fake(
        fakes,
        db,
        incarnation_text="\x00incarnation" * 10_000,
        extra_versions=500,
        reject="refused\x00" * 100_000,
    )
    store.create_model(db, rv.parse_model_config({**MODEL, "version_labels": {}}), "t")
    fleet.cycle()
    assert [state(db, f.address)["state"] for f in good] == ["in_sync", "in_sync"]
    reported = state(db, garbage.address)
    assert reported["state"] == "error"
    assert reported["last_error"].startswith("final: reload refused (code 3): refusedrefused")
    assert len(reported["last_error"]) == planes.ERROR_MAX_CHARS
    assert reported["incarnation_id"] == planes.clip_incarnation("incarnation" * 12)
    assert len(reported["incarnation_id"]) == planes.INCARNATION_MAX_CHARS
    assert len(reported["models"]["m"]) == planes.VERSIONS_MAX_PER_MODEL
    assert "1499" in reported["models"]["m"]  # the newest versions are the ones kept
    history = planes.push_history(db, reported["id"])
    assert [len(h["error"]) for h in history] == [planes.ERROR_MAX_CHARS]


class FaultyFleet(Fleet):
    """Injects an unexpected exception into one step of the work on one plane."""

    def __init__(self, db: Database, settings: Settings, address: str, step: str) -> None:
        super().__init__(db, settings)
        self.faulty_address, self.faulty_step = address, step

    def _fault(self, address: str, step: str) -> None:
        if (address, step) == (self.faulty_address, self.faulty_step):
            raise RuntimeError("injected fault")

    def _probe(self, plane, head):
        self._fault(plane.address, "probe")
        return super()._probe(plane, head)

    def _finish(self, claim, head):
        self._fault(claim.target.plane.address, "finish")
        return super()._finish(claim, head)


@pytest.mark.parametrize("step", ["probe", "finish"])
def test_an_unexpected_error_on_one_plane_is_recorded_there_and_the_others_go_on(
    db, settings, fakes, step, caplog
):
    good = [start_fake(fakes, db), start_fake(fakes, db)]
    bad = start_fake(fakes, db)
    store.create_model(db, rv.parse_model_config(MODEL), "t")
    engine = FaultyFleet(db, settings, bad.address, step)
    try:
        assert engine.cycle() == 1
    finally:
        engine.stop()
    assert [state(db, f.address)["state"] for f in good] == ["in_sync", "in_sync"]
    reported = state(db, bad.address)
    assert (reported["state"], reported["last_error"]) == (
        "error",
        "internal error: RuntimeError (see the log)",
    )
    assert f"data plane {bad.address}: unexpected error" in caplog.text
    fixed = Fleet(db, settings)  # the lease was let go: the next cycle takes the plane
    try:
        fixed.cycle()
    finally:
        fixed.stop()
    assert state(db, bad.address)["state"] == "in_sync"


def test_a_failing_revision_is_retried_with_bounded_exponential_backoff(db, settings, fakes):
    fake = start_fake(fakes, db, reject="bad config")
    store.create_model(db, rv.parse_model_config({**MODEL, "version_labels": {}}), "t")
    engine = Fleet(db, replace(settings, retry_backoff_s=0.3, retry_backoff_max_s=0.6))
    try:
        end = time.monotonic() + 4.0
        cycles = 0
        while time.monotonic() < end:
            engine.cycle()
            cycles += 1
            time.sleep(0.05)
    finally:
        engine.stop()
    at = [r.at for r in fake.reloads]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert 3 <= len(at) < cycles
    assert gaps[0] >= 0.3
    assert all(gap >= 0.6 for gap in gaps[1:])  # doubled once, then capped (not 1.2, 2.4...)
    assert all(gap < 2.4 for gap in gaps)


def test_a_reload_that_outlasts_the_deadline_shows_the_planes_load_error(db, fleet, fakes):
    why = "Could not find SavedModel .pb or .pbtxt at /models/m/1"
    fake = start_fake(fakes, db, reload_delay_s=fleet.settings.rpc_deadline_s + 1, load_error=why)
    store.create_model(db, rv.parse_model_config({**MODEL, "version_labels": {}}), "t")
    fleet.cycle()
    reported = state(db, fake.address)
    deadline = f"{fleet.settings.rpc_deadline_s:g}s"
    assert reported["state"] == "error"  # it answered: not "unreachable"
    assert reported["last_error"] == f"final: reload did not answer within {deadline}; m/1: {why}"
    assert len(fake.reloads) == 1  # the slow reload was not queued again
