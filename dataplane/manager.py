"""Model versions, their states, labels, and leases that keep a version alive per request.

TensorFlow Serving's AspiredVersionsManager, small: sources say which versions are *aspired*
(`_set_aspired`), a pure policy function picks the next load or unload from per-version
snapshots (`availability_preserving` / `resource_preserving`), and load/unload workers on
their own thread pools carry it out. A request takes a lease on one AVAILABLE version; an
unload waits until the last lease is returned, so a swap never fails a request.

`apply_config` is the one way the model set changes: validate, stage (load what the new
config adds while the old config keeps serving), then commit or roll back as a whole. What
to stage and how to judge it is a `ReloadPlan` (reload.py); the manager carries it out.

The state enum, the policies and the reload plan live in their own modules;
`VersionState`, `VersionStatus` and `ReloadReport` are re-exported here, because callers
know the manager as the place model versions come from.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from dataplane import errors, memory
from dataplane.config import (
    ConfigError,
    ModelServerConfig,
    check_confined,
    models_by_name,
    read_config_file,
    validate,
)
from dataplane.errors import Code, ServingError
from dataplane.options import ServerOptions
from dataplane.policies import (
    Action,
    Policy,
    Snapshot,
    availability_preserving,
    resource_preserving,
)
from dataplane.reload import ReloadPlan, ReloadReport, all_settled
from dataplane.sources import Poller, VersionPaths, scan_model
from dataplane.states import VersionState, VersionStatus
from dataplane.supervision import guarded

if TYPE_CHECKING:  # the manager never touches TensorFlow; its tests run without importing it
    from dataplane.servable import Servable

log = logging.getLogger(__name__)

__all__ = ["LoadFn", "ModelManager", "ReloadReport", "VersionState", "VersionStatus"]

LoadFn = Callable[[str, int, str], "Servable"]


# ------------------------------------------------------------------------ state


class _Version:
    """One version slot. Guarded by the manager's lock, except the servable's own calls.

    `staged` marks a version loaded for a reload not yet committed: it is loaded but not
    routable, so a reload that rolls back was never visible to a client.
    """

    __slots__ = ("aspired", "cancel", "error", "in_use", "path", "servable", "staged", "state")

    def __init__(self, path: str) -> None:
        self.path = path
        self.state = VersionState.START
        self.servable: Servable | None = None
        self.error: ServingError | None = None
        self.in_use = 0
        self.aspired = True
        self.staged = False
        self.cancel = threading.Event()

    def restart(self, path: str) -> None:
        """Make an ended version loadable again (it was re-aspired after an unload)."""
        self.path = path
        self.state = VersionState.START
        self.error = None
        self.cancel = threading.Event()

    @property
    def routable(self) -> bool:
        return self.state is VersionState.AVAILABLE and not self.staged


@dataclass
class _Model:
    """Every version slot of one model, its committed labels and its cached latest version."""

    name: str
    versions: dict[int, _Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    latest: _Version | None = None

    def refresh_latest(self) -> None:
        """Recomputed on every state change so a `Latest` lease is one dict lookup."""
        routable = [v for v, slot in self.versions.items() if slot.routable]
        self.latest = self.versions[max(routable)] if routable else None

    def serving(self) -> list[int]:
        """The routable versions, oldest first."""
        return sorted(v for v, slot in self.versions.items() if slot.routable)

    def publish_staged(self) -> None:
        """Make staged versions routable (after a commit, or to end a rolled-back reload)."""
        for slot in self.versions.values():
            slot.staged = False
        self.refresh_latest()

    def snapshots(self) -> list[Snapshot]:
        return [Snapshot(v, s.state, s.aspired) for v, s in sorted(self.versions.items())]

    def aspired(self) -> VersionPaths:
        return {v: s.path for v, s in self.versions.items() if s.aspired}


def _pool_size(configured: int, default: int) -> int:
    return configured if configured > 0 else default


# ------------------------------------------------------------------------ manager


class ConfigObserver(Protocol):
    """Something configured by ModelConfig fields the manager does not act on itself (the
    request logger's logging_config): it may refuse a config, and learns each committed one."""

    def check(self, config: ModelServerConfig) -> None:
        """Raise ConfigError if `config` must not be applied."""

    def configure(self, config: ModelServerConfig) -> None:
        """Take `config`, now in force (called under the manager's lock: must be quick)."""


class ModelManager:
    """Owns every loaded servable; applies configs; resolves requests to leased versions."""

    def __init__(
        self,
        options: ServerOptions,
        load: LoadFn,
        clock: Callable[[], float] = time.time,
        observers: tuple[ConfigObserver, ...] = (),
    ) -> None:
        self._options = options
        self._observers = observers
        self._load = load
        self._clock = clock
        self._policy: Policy = (
            resource_preserving
            if options.resource_preserving_transitions
            else availability_preserving
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        self._reload_lock = threading.Lock()
        self._config: ModelServerConfig | None = None
        self._configured: frozenset[str] = frozenset()  # the names self._config lists
        self._applied_ms = 0
        self._file_config: ModelServerConfig | None = None
        self._pollers: list[Poller] = []
        cores = os.cpu_count() or 2
        self._load_pool = ThreadPoolExecutor(
            _pool_size(options.num_load_threads, max(1, cores // 2)), thread_name_prefix="load"
        )
        self._unload_pool = ThreadPoolExecutor(
            _pool_size(options.num_unload_threads, 1), thread_name_prefix="unload"
        )

    # ------------------------------------------------------------------ requests (hot path)

    @contextmanager
    def lease(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        """Resolve and hold one AVAILABLE version for the duration of a request."""
        with self._lock:
            slot = self._resolve(name, version, label)
            slot.in_use += 1
        try:
            yield slot.servable  # type: ignore[misc]
        finally:
            with self._lock:
                slot.in_use -= 1
                if slot.in_use == 0 and slot.state is VersionState.UNLOADING:
                    self._changed.notify_all()

    def _resolve(self, name: str, version: int | None, label: str | None) -> _Version:
        model = self._models.get(name)
        if label:
            labelled = model.labels.get(label) if model else None
            if labelled is None:
                raise errors.invalid_argument(f"Unrecognized servable version label: {label}")
            slot = model.versions.get(labelled)  # type: ignore[union-attr]
            if slot is None or not slot.routable:
                raise errors.not_found(
                    f"Servable not found for request: Specific({name}, {labelled})"
                )
            return slot
        if version is None:
            if model is None or model.latest is None:
                raise errors.not_found(f"Servable not found for request: Latest({name})")
            return model.latest
        slot = model.versions.get(version) if model else None
        if slot is None or not slot.routable:
            raise errors.not_found(f"Servable not found for request: Specific({name}, {version})")
        return slot

    # ------------------------------------------------------------------ status

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every known version of a model (or one), newest first, as GetModelStatus reports."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise errors.not_found(f"Could not find any versions of model {name}")
            if version is not None and version not in model.versions:
                raise errors.not_found(f"Could not find version {version} of model {name}")
            wanted = [version] if version is not None else sorted(model.versions, reverse=True)
            return [self._status(v, model.versions[v]) for v in wanted]

    @staticmethod
    def _status(version: int, slot: _Version) -> VersionStatus:
        return VersionStatus(version, slot.state, slot.error)

    def model_names(self) -> list[str]:
        """Models in the config in force."""
        with self._lock:
            return sorted(models_by_name(self._config))

    def is_configured(self, name: str) -> bool:
        """Whether the config in force lists `name`. Lock-free (the set is replaced whole),
        as it is asked on the request path."""
        return name in self._configured

    def current_config(self) -> tuple[ModelServerConfig | None, int]:
        """The config in force and when it was applied (unix ms; 0 before the first)."""
        with self._lock:
            return self._config, self._applied_ms

    # ------------------------------------------------------------------ reload

    def apply_config(self, config: ModelServerConfig) -> ReloadReport:
        """Replace the whole model set: validate, stage, then commit or roll back.

        Returns when the config is in force: every version it adds or changes is AVAILABLE
        (committed) or one failed (rolled back: the previous config keeps serving, the failed
        versions keep their error in GetModelStatus). Calls are serialised.
        """
        with self._reload_lock:
            try:
                self._check(config)
            except ConfigError as exc:
                log.error("Rejected model config: %s", exc.message)
                return ReloadReport(exc.code, exc.message, {})
            if config.WhichOneof("config") is None:
                return ReloadReport(Code.OK, "Taking no action for empty config", {})
            return self._carry_out(ReloadPlan(config, self._config, self._options))

    def _check(self, config: ModelServerConfig) -> None:
        validate(config, self._config)
        for observer in self._observers:
            observer.check(config)
        check_confined(config, self._options.base_path_prefixes)
        if not self._options.allow_version_labels and any(
            m.version_labels for m in config.model_config_list.config
        ):
            raise ConfigError(
                "Model version labels are not currently allowed by the server.",
                Code.FAILED_PRECONDITION,
            )

    def _carry_out(self, plan: ReloadPlan) -> ReloadReport:
        """Stage, wait until every staged version has settled, then commit or roll back."""
        with self._lock:
            refused = plan.label_error(self._available)
            if refused is not None:
                return plan.report(refused, {name: [] for name in plan.touched})
            before = {n: self._models[n].aspired() for n in plan.affected if n in self._models}
            for name, versions in plan.staging(before).items():
                self._set_aspired(name, versions, staged=True)
            self._changed.wait_for(lambda: plan.settled(self._status_of))
            failure = plan.judge(self._status_of)
            if failure is None:
                self._commit(plan)
            else:
                self._roll_back(plan, before)
            serving = {name: self._models[name].serving() for name in plan.touched}
        return plan.report(failure, serving)

    def _available(self, name: str, version: int) -> bool:
        """Whether a version serves requests now (staged versions of this reload do not)."""
        model = self._models.get(name)
        slot = model.versions.get(version) if model else None
        return slot is not None and slot.routable

    def _status_of(self, name: str, version: int) -> VersionStatus:
        return self._status(version, self._models[name].versions[version])

    def _commit(self, plan: ReloadPlan) -> None:
        """Publish staged versions and labels, retire what the new config drops: one lock hold."""
        for name in plan.touched:
            model = self._models[name]
            model.publish_staged()
            model.labels = plan.labels(name)
            self._set_aspired(name, plan.wanted[name], staged=False)
        for name in plan.removed:
            self._models[name].labels = {}
            self._set_aspired(name, {}, staged=False)
        self._config = plan.config
        self._configured = frozenset(models_by_name(plan.config))
        self._applied_ms = int(self._clock() * 1000)
        for observer in self._observers:
            observer.configure(plan.config)

    def _roll_back(self, plan: ReloadPlan, before: Mapping[str, VersionPaths]) -> None:
        """Back to the versions the previous config aspired; staged ones unload unseen."""
        for name in plan.affected:
            self._set_aspired(name, before.get(name, {}), staged=False)
        self._changed.wait_for(lambda: all_settled(before, self._status_of))
        for name in plan.touched:
            self._models[name].publish_staged()

    # ------------------------------------------------------------------ pollers

    def start(self) -> None:
        """Start polling base paths (and the config file, if asked to)."""
        fs_wait = self._options.file_system_poll_wait_seconds
        if fs_wait > 0:
            self._pollers.append(Poller("fs-poll", fs_wait, self.poll_file_system))
        cfg_wait = self._options.model_config_file_poll_wait_seconds
        if self._options.model_config_file and cfg_wait > 0:
            self._file_config = self._config
            self._pollers.append(Poller("config-poll", cfg_wait, self.poll_config_file))
        for poller in self._pollers:
            poller.start()

    def poll_file_system(self) -> None:
        """One file-system round: re-aspire each served model's versions found on disk.

        Skipped while a reload runs: the reload scans the disk itself, and a poll must not
        change aspired versions in the middle of its staging.
        """
        if not self._reload_lock.acquire(blocking=False):
            return
        try:
            for model in models_by_name(self._config).values():
                found = scan_model(model)
                if found is None:
                    log.warning(
                        "Base path %s of model %s is not readable", model.base_path, model.name
                    )
                    continue
                with self._lock:
                    self._set_aspired(model.name, found, staged=False)
        finally:
            self._reload_lock.release()

    def poll_config_file(self) -> None:
        """Apply the config file when its content changed; a bad file keeps the running config."""
        try:
            config = read_config_file(self._options.model_config_file)
        except ConfigError as exc:
            log.error("Keeping the running config: %s", exc.message)
            return
        if config == self._file_config:
            return
        report = self.apply_config(config)
        if report.code is Code.OK:
            self._file_config = config  # a failed one is tried again at the next poll
            log.info("Applied %s: %s", self._options.model_config_file, dict(report.models))
        else:
            log.error("Keeping the running config: %s", report.message)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self) -> None:
        """Stop polling, unload every version once its requests finish, stop the workers."""
        for poller in self._pollers:
            poller.stop()
        self._pollers.clear()
        with self._reload_lock, self._lock:
            for name in list(self._models):
                self._set_aspired(name, {}, staged=False)
            self._changed.wait_for(self._all_ended)
        self._load_pool.shutdown()
        self._unload_pool.shutdown()

    def _all_ended(self) -> bool:
        return all(
            slot.state in (VersionState.START, VersionState.END)
            for model in self._models.values()
            for slot in model.versions.values()
        )

    # ------------------------------------------------------------------ transitions
    # Everything below runs with self._lock held unless it says otherwise.

    def _set_aspired(self, name: str, wanted: Mapping[int, str], staged: bool) -> None:
        """Make exactly `wanted` the aspired versions of `name`, then act on the change.

        A version that failed stays failed while it stays aspired (a poll must not reload a
        corrupt version every second), but a reload that stages it again retries it: that
        is how an operator says "I fixed it".
        """
        model = self._models.setdefault(name, _Model(name))
        for version, slot in model.versions.items():
            if version not in wanted and slot.aspired:
                slot.aspired = False
                slot.cancel.set()  # stop retrying a load nobody wants any more
        for version, path in wanted.items():
            slot = model.versions.get(version)
            if slot is None:
                slot = model.versions[version] = _Version(path)
                slot.staged = staged
            elif not slot.aspired or (staged and slot.state is VersionState.END):
                slot.aspired = True
                if slot.state is VersionState.END:
                    slot.restart(path)
                if slot.state is not VersionState.AVAILABLE:
                    slot.staged = staged
            elif staged and slot.state is VersionState.LOADING:
                slot.staged = True  # a reload waits for it now: no more retries
        self._manage(model)

    def _manage(self, model: _Model) -> None:
        """Carry out the policy's decisions until it has none left for this model."""
        while (decision := self._policy(model.snapshots())) is not None:
            slot = model.versions[decision.version]
            if decision.action is Action.LOAD:
                slot.state = VersionState.LOADING
                # A worker failing past its own error handling would leave the version
                # LOADING or UNLOADING for good (and reloads waiting on it hung): fatal.
                load = guarded("load worker", self._load_worker)
                self._load_pool.submit(load, model, decision.version, slot)
            else:
                slot.state = VersionState.UNLOADING
                unload = guarded("unload worker", self._unload_worker)
                self._unload_pool.submit(unload, model, decision.version, slot)
        model.refresh_latest()
        self._changed.notify_all()

    def _load_worker(self, model: _Model, version: int, slot: _Version) -> None:
        """Runs on a load thread, without the lock while loading."""
        outcome = self._load_with_retries(model.name, version, slot)
        with self._lock:
            if isinstance(outcome, ServingError):
                slot.state, slot.error = VersionState.END, outcome
            else:
                slot.state, slot.servable = VersionState.AVAILABLE, outcome
            self._manage(model)

    def _load_with_retries(
        self, name: str, version: int, slot: _Version
    ) -> Servable | ServingError:
        """Up to 1 + max_num_load_retries attempts; stops early once the version is unaspired.

        A staged version (one a reload waits for) is not retried: with TF Serving's
        defaults the retries hold a reload, its caller and every reload queued behind it
        for five minutes, past any caller's deadline. Its failure rolls the reload back at
        once with the load error; the caller (or the next config-file poll) tries again.
        """
        attempts = 1 + max(self._options.max_num_load_retries, 0)
        interval_s = self._options.load_retry_interval_micros / 1e6
        error = ServingError(Code.CANCELLED, "Load cancelled")
        for attempt in range(1, attempts + 1):
            if slot.cancel.is_set():
                break
            try:
                return self._load(name, version, slot.path)
            except ServingError as exc:
                error = exc
            except Exception as exc:  # a loader bug must cost one version, never the worker
                error = ServingError(Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
            log.warning(
                "Loading %s version %d failed (attempt %d/%d): %s",
                name,
                version,
                attempt,
                attempts,
                error.message,
            )
            if attempt < attempts and self._no_more_attempts(slot, interval_s):
                break
        return error

    def _no_more_attempts(self, slot: _Version, interval_s: float) -> bool:
        """Wait out the retry interval; True, at once, when the version is no longer aspired
        or a reload now waits for it (it became staged)."""
        with self._lock:
            return self._changed.wait_for(
                lambda: slot.cancel.is_set() or slot.staged, timeout=interval_s
            )

    def _unload_worker(self, model: _Model, version: int, slot: _Version) -> None:
        """Runs on an unload thread: waits for the last lease, closes, gives memory back."""
        with self._lock:
            self._changed.wait_for(lambda: slot.in_use == 0)
            servable, slot.servable = slot.servable, None
        if servable is not None:
            try:
                servable.close()
            except Exception:  # it is unreachable either way; the version must still end
                log.exception("Closing %s version %d failed", model.name, version)
            del servable
            memory.release_freed_memory()
        log.info("Unloaded %s version %d", model.name, version)
        with self._lock:
            slot.state = VersionState.END
            if slot.aspired:
                slot.restart(slot.path)
            self._manage(model)
