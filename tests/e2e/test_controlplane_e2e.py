"""End to end: a real control plane pushing to two real data planes on loopback.

Runs once on SQLite and once on PostgreSQL. The tests share one fleet per backend and run in
file order; each uses its own model names so that they do not depend on each other's models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ControlPlaneProcess
from tests.support.processes import DataPlaneProcess, start_dataplane

pytestmark = pytest.mark.slow
SYNC_TIMEOUT_S = 90.0


@dataclass
class Fleet:
    control: ControlPlaneProcess
    planes: list[DataPlaneProcess]
    base_path: str

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.control.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, f"{self.control.url}/api/v1{path}", headers=headers, timeout=60, **kwargs
        )

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        assert response.status_code == status, (response.status_code, response.text)
        return response.json() if response.content else None

    def head(self) -> int:
        revisions = self.ok("get", "/revisions?limit=1")["revisions"]
        return revisions[0]["revision"] if revisions else 0

    def states(self) -> dict[str, dict[str, Any]]:
        return {p["address"]: p for p in self.ok("get", "/dataplanes")["dataplanes"]}

    def wait_in_sync(self, revision: int | None = None) -> None:
        """Until every plane reports in_sync at `revision` (default: the head)."""
        revision = self.head() if revision is None else revision

        def synced() -> bool:
            states = self.states()
            return len(states) == len(self.planes) and all(
                s["state"] == "in_sync" and s["applied_revision"] == revision
                for s in states.values()
            )

        wait_until(synced, f"all planes in_sync at {revision}: {{}}", self.states)

    def model(self, name: str, versions: list[int], labels: dict[str, int]) -> dict[str, Any]:
        return {
            "name": name,
            "base_path": self.base_path,
            "model_platform": "tensorflow",
            "model_version_policy": {"specific": {"versions": versions}},
            "version_labels": labels,
        }


def wait_until(
    predicate: Callable[[], bool],
    what: str,
    detail: Callable[[], Any] = lambda: "",
    timeout: float = SYNC_TIMEOUT_S,
) -> float:
    """Poll `predicate`; returns the seconds it took, fails with `what` filled by `detail()`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for " + what.format(detail()))
        time.sleep(0.2)
    return time.monotonic() - start


def predict(plane: DataPlaneProcess, path: str) -> tuple[int, Any]:
    response = requests.post(
        f"{plane.rest_url}/v1/models/{path}:predict", json={"instances": [1.0]}, timeout=30
    )
    body = response.json()
    return response.status_code, body.get("predictions", body)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fleet(
    request: pytest.FixtureRequest, saved_models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp(f"cp-e2e-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite:///{logs / 'controlplane.db'}"
    else:
        database_url = request.getfixturevalue("e2e_postgres").new_database()
    planes = [start_dataplane(log_dir=logs) for _ in range(2)]
    control = ControlPlaneProcess(database_url, [p.grpc_target for p in planes], logs)
    try:
        control.prepare().start()
        yield Fleet(control, planes, saved_models.multi_version)
    finally:
        control.stop()
        for plane in planes:
            plane.stop()


def test_create_model_is_served_by_both_planes(fleet: Fleet):
    created = fleet.ok("post", "/models", 201, json=fleet.model("create", [1], {}))
    assert created["revision"] == fleet.head()
    fleet.wait_in_sync(created["revision"])
    for plane in fleet.planes:
        assert predict(plane, "create") == (200, [2.5])

    def reported(plane: DataPlaneProcess) -> dict[str, Any]:
        return fleet.states()[plane.grpc_target]

    for plane in fleet.planes:  # reported by the next reconcile probe
        wait_until(
            lambda p=plane: reported(p)["models"].get("create") == {"1": "AVAILABLE"},
            "model states: {}",
            fleet.states,
        )
        assert reported(plane)["last_error"] is None
        assert reported(plane)["last_seen"] is not None


def test_moving_a_label_routes_both_planes_to_the_new_version(fleet: Fleet):
    fleet.ok("post", "/models", 201, json=fleet.model("labels", [1], {"stable": 1}))
    fleet.wait_in_sync()
    for plane in fleet.planes:
        assert predict(plane, "labels/labels/stable") == (200, [2.5])
    refused = fleet.api("put", "/models/labels/labels/stable", json={"version": 2})
    assert refused.status_code == 400
    assert "model_version_policy specific {versions: [1]}" in refused.json()["error"]
    # Serving version 2 and moving the label in one update: the push still takes two steps.
    moved = fleet.ok("put", "/models/labels", json=fleet.model("labels", [1, 2], {"stable": 2}))
    assert moved["model_version_policy"] == {"specific": {"versions": [1, 2]}}
    fleet.wait_in_sync(moved["revision"])
    for plane in fleet.planes:
        assert predict(plane, "labels/labels/stable") == (200, [3.5])
        assert predict(plane, "labels/versions/1") == (200, [2.5])
    plane_id = fleet.states()[fleet.planes[0].grpc_target]["id"]
    steps = [
        (r["step"], r["ok"])
        for r in fleet.ok("get", f"/dataplanes/{plane_id}")["push_results"]
        if r["revision"] == moved["revision"]
    ]
    assert steps == [("final", True), ("intermediate", True)]


def test_deleted_model_answers_404_on_both_planes(fleet: Fleet):
    fleet.ok("post", "/models", 201, json=fleet.model("doomed", [1], {}))
    fleet.wait_in_sync()
    assert fleet.api("delete", "/models/doomed").status_code == 204
    fleet.wait_in_sync()
    for plane in fleet.planes:
        status, _ = predict(plane, "doomed")
        assert status == 404
        # Like upstream, model status may still list the unloaded versions, as END.
        status = requests.get(f"{plane.rest_url}/v1/models/doomed", timeout=10)
        if status.status_code == 200:
            versions = status.json()["model_version_status"]
            assert {v["state"] for v in versions} == {"END"}
        else:
            assert status.status_code == 404


def test_a_stale_revision_gets_409(fleet: Fleet):
    first = fleet.ok("post", "/models", 201, json=fleet.model("stale", [1, 2], {}))
    fleet.ok("put", "/models/stale", json={**fleet.model("stale", [1, 2], {"stable": 1})})
    stale = fleet.api(
        "put",
        "/models/stale",
        json={**fleet.model("stale", [2], {}), "revision": first["revision"]},
    )
    assert stale.status_code == 409
    assert fleet.ok("get", "/models/stale")["version_labels"] == {"stable": 1}
    header = fleet.api(
        "put",
        "/models/stale/labels/stable",
        json={"version": 2},
        headers={"If-Match": f'"{first["revision"]}"'},
    )
    assert header.status_code == 409


def test_rollback_restores_the_earlier_set(fleet: Fleet):
    before = fleet.head()
    models_before = fleet.ok("get", "/models")["models"]
    fleet.ok("post", "/models", 201, json=fleet.model("rollback", [1], {}))
    fleet.wait_in_sync()
    assert predict(fleet.planes[1], "rollback") == (200, [2.5])
    rolled = fleet.ok("post", f"/revisions/{before}/rollback", 201)
    assert rolled["rollback_of"] == before
    fleet.wait_in_sync(rolled["revision"])
    assert [m["name"] for m in fleet.ok("get", "/models")["models"]] == [
        m["name"] for m in models_before
    ]
    for plane in fleet.planes:
        assert predict(plane, "rollback")[0] == 404


def test_killed_plane_restarted_empty_serves_the_head_within_60s(fleet: Fleet):
    fleet.wait_in_sync()
    victim = fleet.planes[0]
    killed_at = time.monotonic()
    victim.kill()
    victim.start()  # same command, same ports, no model: it comes back empty
    listening = time.monotonic() - killed_at

    def serving() -> bool:
        return predict(victim, "labels/labels/stable") == (200, [3.5])

    resynced = wait_until(serving, "the restarted plane to serve the head", timeout=60)
    fleet.wait_in_sync()
    print(
        f"\nre-sync after kill -9: plane listening {listening:.1f}s after the kill, "
        f"serving the head {resynced:.1f}s after that ({listening + resynced:.1f}s in all)"
    )
    assert resynced < 60


def test_unreachable_plane_shows_its_error_then_catches_up(fleet: Fleet):
    fleet.wait_in_sync()
    down, up = fleet.planes
    down.stop()
    change = fleet.ok("put", "/models/labels/labels/canary", json={"version": 1})

    def split() -> bool:
        states = fleet.states()
        return (
            states[down.grpc_target]["state"] == "unreachable"
            and states[up.grpc_target]["state"] == "in_sync"
            and states[up.grpc_target]["applied_revision"] == change["revision"]
        )

    wait_until(split, "one plane unreachable and one in_sync: {}", fleet.states)
    error = fleet.states()[down.grpc_target]["last_error"]
    assert "UNAVAILABLE" in error
    assert predict(up, "labels/labels/canary") == (200, [2.5])
    down.start()
    fleet.wait_in_sync(change["revision"])
    assert predict(down, "labels/labels/canary") == (200, [2.5])
    assert fleet.states()[down.grpc_target]["last_error"] is None


def test_control_plane_restart_keeps_all_state(fleet: Fleet):
    fleet.wait_in_sync()
    models = fleet.ok("get", "/models")
    revisions = fleet.ok("get", "/revisions")
    planes = {a: (s["id"], s["applied_revision"]) for a, s in fleet.states().items()}
    assert fleet.control.stop(timeout=60) == 0  # SIGTERM: gunicorn drains, the fleet stops
    fleet.control.restart()
    assert fleet.api("get", "/models").headers["Server"] == "gunicorn"
    assert fleet.ok("get", "/models") == models
    assert fleet.ok("get", "/revisions") == revisions
    assert {a: (s["id"], s["applied_revision"]) for a, s in fleet.states().items()} == planes
    fleet.wait_in_sync()
    assert predict(fleet.planes[1], "labels/labels/stable") == (200, [3.5])


def test_twenty_concurrent_label_writes(fleet: Fleet):
    start = fleet.ok("get", "/models/labels")["revision"]
    results: list[tuple[int, int | None]] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        headers = {"If-Match": f'"{start}"'} if i % 2 else {}
        response = fleet.api(
            "put", "/models/labels/labels/stable", json={"version": 1 + i % 2}, headers=headers
        )
        revision = response.json().get("revision") if response.status_code == 200 else None
        with lock:
            results.append((response.status_code, revision))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted({status for status, _ in results}) <= [200, 409]
    accepted = sorted(revision for status, revision in results if status == 200)
    assert len(accepted) == len(set(accepted)) >= 10  # every unconditional write wins
    assert all(revision > start for revision in accepted)
    listed = [r["revision"] for r in fleet.ok("get", "/revisions?limit=1000")["revisions"]]
    assert listed == sorted(listed, reverse=True) == list(range(listed[0], 0, -1))
    assert set(accepted) <= set(listed)
    fleet.wait_in_sync()
    final = fleet.ok("get", "/models/labels")["version_labels"]["stable"]
    for plane in fleet.planes:
        assert predict(plane, "labels/labels/stable") == (200, [2.5 + (final - 1)])
