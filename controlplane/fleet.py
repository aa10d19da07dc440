"""Keeps every data plane serving the head revision: discovery, push, reconcile.

One background worker runs a *cycle* whenever a change is committed (notify) and at least every
`reconcile_interval_s`: probe every plane (GetInfo, else GetModelStatus), then push the head to
each plane that is not serving it. A push is two steps when labels need it (see
revisions.intermediate_config): the stepping stone goes to every plane, the worker waits until
the labelled versions are AVAILABLE on all of them, then the final config goes out.

Planes are isolated from each other: whatever goes wrong while working on one (a bug, a
database error on what it reported) is logged and recorded on that plane, and the others go on.
A revision a plane keeps failing is retried with exponential backoff, not every cycle.

The worker runs in one process per control-plane instance (`serve` runs it beside gunicorn,
see server.py); the HTTP workers' `notify` wakes it with SIGUSR1.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from . import planes, request_ids, store
from . import revisions as rv
from .client import PlaneClient, PlaneRejected, PlaneUnreachable
from .config import Settings
from .credentials import PlaneCredentials
from .db import Database

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class LeaseLost(Exception):
    """Our claim on a plane expired and another pusher took it: stop talking to the plane."""


@dataclass(frozen=True)
class Target:
    """One plane a cycle works on, with what its probe found."""

    plane: planes.PlaneView
    available: dict[str, set[int]]
    needs_push: bool


@dataclass
class Claim:
    """A plane this pusher holds the lease on for one revision."""

    target: Target
    owner: str

    @property
    def plane_id(self) -> int:
        return self.target.plane.id


@dataclass(frozen=True)
class Backoff:
    """A revision that failed `failures` times in a row on one plane; retried after `until`."""

    revision: int
    failures: int
    until: float


def resolve_dns(name_port: str) -> set[str]:
    """All IPv4 A records of `name:port` as "ip:port" (a headless Service lists every pod)."""
    host, _, port = name_port.rpartition(":")
    infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    return {f"{info[4][0]}:{port}" for info in infos}


class Fleet:
    """The push/reconcile engine for one control-plane process."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        resolver: Callable[[str], set[str]] = resolve_dns,
        credentials: PlaneCredentials | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self._resolver = resolver
        self._credentials = credentials or PlaneCredentials.load(settings.dataplane_auth)
        self._backoff: dict[int, Backoff] = {}
        self._clients: dict[str, PlaneClient] = {}
        self._clients_lock = threading.Lock()
        self._cycle_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fleet")
        self._next_dns = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background worker; it registers the static planes in its first cycle,
        so that the app starts while the database is down."""
        self._wake.set()  # first cycle right away: planes may have restarted while we were down
        self._thread = threading.Thread(target=self._run, name="fleet-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def notify(self) -> None:
        """A change was committed: run a cycle now instead of at the next tick.

        In an HTTP worker the cycle runs in `serve`'s process (`fleet_pid`): it gets a SIGUSR1.
        """
        if self._thread is not None or not self.settings.fleet_pid:
            self._wake.set()
            return
        try:
            os.kill(self.settings.fleet_pid, signal.SIGUSR1)
        except OSError as err:  # it is going away: the next instance's first cycle catches up
            log.warning("cannot wake the fleet worker (pid %d): %s", self.settings.fleet_pid, err)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.reconcile_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.discover()
                self.cycle()
            except SQLAlchemyError as err:  # the database is down: one line per cycle
                log.warning("fleet cycle skipped, database unavailable: %s", _first_line(err))
            except Exception:  # the worker must survive a bug in one cycle
                log.exception("fleet cycle failed")

    # -- discovery ------------------------------------------------------------------------

    def discover(self) -> None:
        """Static planes once, DNS planes every dns_refresh_s (kept as they are if DNS fails)."""
        if self._next_dns == 0.0:
            planes.sync_source(self.db, "env", self.settings.dataplanes)
        if self.settings.dataplanes_dns and time.monotonic() >= self._next_dns:
            try:
                planes.sync_source(self.db, "dns", self._resolver(self.settings.dataplanes_dns))
            except OSError as err:
                log.warning("resolving %s failed: %s", self.settings.dataplanes_dns, err)
        self._next_dns = time.monotonic() + self.settings.dns_refresh_s

    # -- one cycle ------------------------------------------------------------------------

    def cycle(self, force: bool = False) -> int:
        """Probe every plane and push the head where needed (all planes if `force`).

        Returns the head revision the cycle worked towards.
        """
        with self._cycle_lock:
            head = store.head(self.db)
            targets = self._map(lambda p: self._probe(p, head), planes.list_planes(self.db))
            todo = [
                t
                for t in targets
                if t is not None and (force or (t.needs_push and not self._waiting(t, head)))
            ]
            if todo:
                self._push(head, todo)
            self._drop_stale_clients()
            return head.number

    def _probe(self, plane: planes.PlaneView, head: store.Head) -> Target | None:
        """Ask the plane what it serves; None when it cannot be reached."""
        client = self._client(plane.address)
        try:
            info = client.info()
            states = {
                m.name: client.model_states(m.name) for m in head.config.model_config_list.config
            }
        except PlaneUnreachable as err:
            log.info("data plane %s: %s", plane.address, err)
            planes.record_unreachable(self.db, plane.id, err.public)
            return None
        except PlaneRejected as err:
            planes.record_unreachable(self.db, plane.id, str(err))
            return None
        restarted = bool(
            info
            and plane.incarnation_id
            and planes.clip_incarnation(info.incarnation_id) != plane.incarnation_id
        )
        serving_head = _serving_head(head, info.config_fingerprint if info else None, states)
        observation = planes.Observation(
            incarnation_id=info.incarnation_id if info else None,
            model_states={
                name: {str(v): s for v, s in sorted((vs or {}).items())}
                for name, vs in states.items()
            },
            serving_head=serving_head,
            restarted=restarted,
        )
        planes.record_observation(self.db, plane.id, head.number, observation)
        needs_push = serving_head is False or (
            serving_head is None and plane.applied_revision != head.number
        )
        available = {
            name: {v for v, s in (vs or {}).items() if s == "AVAILABLE"}
            for name, vs in states.items()
        }
        return Target(plane, available, needs_push)

    def _push(self, head: store.Head, targets: list[Target]) -> None:
        """Stepping stones everywhere, wait for every labelled version, then the head."""
        claims = self._map(lambda t: self._claim(t, head), targets)
        prepared = self._map(lambda c: self._prepare(c, head), [c for c in claims if c])
        self._map(lambda c: self._finish(c, head), [c for c in prepared if c])

    def _waiting(self, target: Target, head: store.Head) -> bool:
        """True while the head is in backoff on this plane after failing there."""
        backoff = self._backoff.get(target.plane.id)
        return (
            backoff is not None
            and backoff.revision == head.number
            and time.monotonic() < backoff.until
        )

    def _failed(self, plane_id: int, revision: int) -> None:
        """Count one more failure of `revision` on the plane and set when it is tried again."""
        last = self._backoff.get(plane_id)
        failures = last.failures + 1 if last and last.revision == revision else 1
        delay = min(
            self.settings.retry_backoff_s * 2 ** (failures - 1), self.settings.retry_backoff_max_s
        )
        self._backoff[plane_id] = Backoff(revision, failures, time.monotonic() + delay)

    def _claim(self, target: Target, head: store.Head) -> Claim | None:
        owner = uuid.uuid4().hex
        ok = planes.acquire_lease(
            self.db, target.plane.id, owner, head.number, self.settings.lease_s
        )
        return Claim(target, owner) if ok else None

    def _prepare(self, claim: Claim, head: store.Head) -> Claim | None:
        """Push the stepping stone if labels need one and wait for the labelled versions."""
        stone = rv.intermediate_config(
            head.config, self._applied_config(claim.target.plane), claim.target.available
        )
        if stone is None:
            return claim
        if not self._send(claim, head.number, "intermediate", stone):
            return None
        return claim if self._await_labels(claim, head) else None

    def _finish(self, claim: Claim, head: store.Head) -> None:
        if self._send(claim, head.number, "final", head.config):
            planes.record_applied(self.db, claim.plane_id, claim.owner, head.number)
            self._backoff.pop(claim.plane_id, None)

    # -- talking to one plane -------------------------------------------------------------

    def _send(self, claim: Claim, revision: int, step: str, config: ModelServerConfig) -> bool:
        """HandleReloadConfigRequest with retries and backoff; records the outcome."""
        client = self._client(claim.target.plane.address)
        attempts, error, state = 0, "", "error"
        for attempt in range(1, self.settings.push_attempts + 1):
            attempts = attempt
            try:
                self._renew(claim)
                # this line's request_id is the one the plane logs the reload under
                log.info("push %s of revision %d to %s", step, revision, client.address)
                client.reload(config)
            except LeaseLost:
                return False
            except PlaneUnreachable as err:
                log.info("push to %s: %s", claim.target.plane.address, err)
                error, state = err.public, "unreachable"
                time.sleep(self.settings.push_backoff_s * 2 ** (attempt - 1))
                continue
            except PlaneRejected as err:
                error, state = str(err), "error"
                break
            self._record_step(claim, revision, step, None, attempts)
            return True
        self._record_step(claim, revision, step, error, attempts)
        planes.record_failure(self.db, claim.plane_id, claim.owner, state, f"{step}: {error}")
        self._failed(claim.plane_id, revision)
        return False

    def _record_step(
        self, claim: Claim, revision: int, step: str, error: str | None, attempts: int
    ) -> None:
        keep = self.settings.push_history_keep
        planes.record_step(self.db, claim.plane_id, revision, step, error, attempts, keep)

    def _await_labels(self, claim: Claim, head: store.Head) -> bool:
        """Wait until every version a label names is AVAILABLE on this plane."""
        client = self._client(claim.target.plane.address)
        wanted = rv.label_versions(head.config)
        deadline = time.monotonic() + self.settings.label_wait_s
        missing: list[str] = []
        while time.monotonic() < deadline:
            try:
                self._renew(claim)
                missing = _missing_versions(client, wanted)
            except LeaseLost:
                return False
            except PlaneUnreachable as err:
                missing = [err.public]
            except PlaneRejected as err:
                missing = [str(err)]
            if not missing:
                return True
            time.sleep(0.25)
        error = f"labelled versions not AVAILABLE after {self.settings.label_wait_s:g}s: {missing}"
        planes.record_failure(self.db, claim.plane_id, claim.owner, "error", error)
        self._failed(claim.plane_id, head.number)
        return False

    def _renew(self, claim: Claim) -> None:
        if not planes.renew_lease(self.db, claim.plane_id, claim.owner, self.settings.lease_s):
            raise LeaseLost()

    def _applied_config(self, plane: planes.PlaneView) -> ModelServerConfig | None:
        if not plane.applied_revision:
            return None
        return store.get_revision(self.db, plane.applied_revision).config

    def _client(self, address: str) -> PlaneClient:
        with self._clients_lock:
            client = self._clients.get(address)
            if client is None:
                client = PlaneClient(address, self.settings.rpc_deadline_s, self._credentials)
                self._clients[address] = client
            return client

    def _drop_stale_clients(self) -> None:
        known = {p.address for p in planes.list_planes(self.db)}
        with self._clients_lock:
            for address in list(self._clients):
                if address not in known:
                    self._clients.pop(address).close()

    def _map(self, fn: Callable[[T], R | None], items: Iterable[T]) -> list[R | None]:
        """Run `fn` over `items` (planes, targets or claims) concurrently: one slow plane must
        not delay the others, and one that raises must not stop them (it gets None)."""
        return list(self._pool.map(lambda item: self._isolated(fn, item), list(items)))

    def _isolated(self, fn: Callable[[T], R | None], item: T) -> R | None:
        """`fn(item)` with its own request id (in its log lines and its calls to the plane)."""
        plane = _plane_of(item)
        with request_ids.new_request(plane=plane.address):
            return self._guarded(fn, item, plane)

    def _guarded(self, fn: Callable[[T], R | None], item: T, plane: planes.PlaneView) -> R | None:
        try:
            return fn(item)
        except Exception as err:  # anything: the other planes must go on
            owner = item.owner if isinstance(item, Claim) else None
            log.exception("data plane %s: unexpected error", plane.address)
            try:
                error = f"internal error: {type(err).__name__} (see the log)"
                planes.record_internal_error(self.db, plane.id, error, owner)
            except Exception:  # the database itself may be what failed
                log.exception("data plane %s: cannot record the error", plane.address)
            return None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _plane_of(item: object) -> planes.PlaneView:
    """The plane a unit of work is about (a PlaneView, Target or Claim)."""
    if isinstance(item, Claim):
        return item.target.plane
    if isinstance(item, Target):
        return item.plane
    assert isinstance(item, planes.PlaneView)
    return item


def _serving_head(
    head: store.Head, fingerprint: str | None, states: dict[str, dict[int, str] | None]
) -> bool | None:
    """True/False when known, None when it cannot be told.

    Our info service answers exactly. A stock server only proves it is *not* serving the head
    (a head model is missing or has no AVAILABLE version, e.g. after a restart).
    """
    if fingerprint is not None:
        return fingerprint == head.fingerprint
    if all(vs and "AVAILABLE" in vs.values() for vs in states.values()):
        return None
    return False


def _missing_versions(client: PlaneClient, wanted: dict[str, set[int]]) -> list[str]:
    missing = []
    for name, versions in sorted(wanted.items()):
        states = client.model_states(name) or {}
        missing += [f"{name}/{v}" for v in sorted(versions) if states.get(v) != "AVAILABLE"]
    return missing
