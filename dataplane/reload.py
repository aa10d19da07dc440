"""One apply_config after validation, as a plan: what to stage, whether it worked, what to say.

The manager carries a plan out under its own lock (stage, wait until every staged version
has settled, then commit or roll back as a whole). What the plan decides depends only on
the two configs, the disk and the version statuses the manager hands it, so the judging
and TensorFlow Serving's wording of the outcome stay out of the threaded code.

Only models that are new or whose ModelConfig changed are staged and judged; an unchanged
model's own trouble (a corrupt new version on disk) is the poller's business and never
fails someone else's reload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dataplane.config import ModelServerConfig, models_by_name, unavailable_label
from dataplane.errors import Code, ServingError
from dataplane.options import ServerOptions
from dataplane.sources import VersionPaths, scan_model
from dataplane.states import VersionState, VersionStatus

StatusOf = Callable[[str, int], VersionStatus]  # (model, version) -> its current status
Failure = tuple[Code, str]

_SETTLED = frozenset({VersionState.AVAILABLE, VersionState.END})


@dataclass(frozen=True)
class ReloadReport:
    """The answer to one apply_config: a status plus, per model, what happened to it."""

    code: Code
    message: str
    models: Mapping[str, str]


def all_settled(versions: Mapping[str, VersionPaths], status_of: StatusOf) -> bool:
    """Whether every listed version has finished loading or unloading, either way."""
    return all(
        status_of(name, v).state in _SETTLED for name, paths in versions.items() for v in paths
    )


class ReloadPlan:
    """What one reload changes; built (and the disk scanned) before the manager's lock is taken."""

    def __init__(
        self, config: ModelServerConfig, previous: ModelServerConfig | None, options: ServerOptions
    ) -> None:
        self.config = config
        self._options = options
        self._old = models_by_name(previous)
        self._new = models_by_name(config)
        self.touched = [n for n, cfg in self._new.items() if self._old.get(n) != cfg]
        self.removed = [n for n in self._old if n not in self._new]
        self._notes: dict[str, list[str]] = {n: [] for n in (*self._new, *self.removed)}
        self.wanted = {name: self._scan(name) for name in self.touched}

    @property
    def affected(self) -> tuple[str, ...]:
        """The models whose aspired versions this reload may change."""
        return (*self.touched, *self.removed)

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._new[name].version_labels)

    def _scan(self, name: str) -> VersionPaths:
        model = self._new[name]
        found = scan_model(model)
        if found is None:
            self._notes[name].append(f"base_path {model.base_path} not found; will poll for it")
            return {}
        if not found:
            self._notes[name].append("no version found under base_path yet; will poll for it")
        return found

    def staging(self, before: Mapping[str, VersionPaths]) -> dict[str, VersionPaths]:
        """The versions each model aspires while staged, given those it aspired `before`.

        Availability-preserving: the new versions next to the old ones, unloading nothing.
        Resource-preserving: the new versions only (old ones unload first), because holding
        both is exactly what that mode exists to avoid.
        """
        if not self._options.resource_preserving_transitions:
            return {name: {**before.get(name, {}), **self.wanted[name]} for name in self.touched}
        staged = {name: self.wanted[name] for name in self.touched}
        staged.update({name: {} for name in self.removed})
        return staged

    def settled(self, status_of: StatusOf) -> bool:
        return all_settled(self.wanted, status_of)

    def judge(self, status_of: StatusOf) -> Failure | None:
        """Why the staged versions must not be committed, or None when they may."""
        return self._failures(status_of)

    def _failures(self, status_of: StatusOf) -> Failure | None:
        """TensorFlow Serving's message for models whose versions did not become available."""
        failed = [
            (name, v, status.error)
            for name, versions in self.wanted.items()
            for v in versions
            if (status := status_of(name, v)).state is not VersionState.AVAILABLE
        ]
        for name, v, error in failed:
            self._notes[name].append(f"version {v} failed to load: {_describe(error)}")
        if not failed:
            return None
        names = sorted({name for name, _, _ in failed})
        detail = "".join(
            f"{{{{name: {name} version: {v}}} due to error: {_describe(error)}}}, "
            for name, v, error in failed
        )
        return Code.UNKNOWN, (
            f"{len(names)} model(s) did not become available: {{{detail}}}. "
            "The previous model config remains in force."
        )

    def label_error(self, available: Callable[[str, int], bool]) -> Failure | None:
        """TF Serving's label rule (server_core.cc UpdateModelVersionLabelMap), judged before
        anything of this reload loads: a label of a new or changed model must name a version
        that is AVAILABLE now. So labels in a first config are refused, and moving a label to
        a new version takes two reloads (load it, then label it).

        With --allow_version_labels_for_unavailable_models a label may name any version, but
        an existing label may not move to a version that is not available. Unlike TF
        Serving, a label may not stay on a version the new config stops serving (it would
        dangle once that version unloads); a version the model's `specific` policy does not
        list was already refused by `config.validate`.
        """
        allow_unavailable = self._options.allow_version_labels_for_unavailable_models
        for name in self.touched:
            previous = dict(self._old[name].version_labels) if name in self._old else {}
            for label, version in sorted(self._new[name].version_labels.items()):
                if available(name, version) and version in self.wanted[name]:
                    continue
                if allow_unavailable and previous.get(label, version) == version:
                    continue
                message = unavailable_label(name, version)
                self._notes[name].append(message)
                return Code.FAILED_PRECONDITION, message
        return None

    def report(self, failure: Failure | None, serving: Mapping[str, Sequence[int]]) -> ReloadReport:
        """The answer, given the judgement and the versions each touched model now serves."""
        models: dict[str, str] = {}
        for name, notes in self._notes.items():
            if name in self.removed:
                outcome = "removed" if failure is None else "kept (reload rolled back)"
            elif name not in self.touched:
                outcome = "unchanged"
            else:
                outcome = self._outcome(name, failure is None, serving[name])
            models[name] = "; ".join([outcome, *notes])
        if failure is None:
            return ReloadReport(Code.OK, "", models)
        code, message = failure
        return ReloadReport(code, message, models)

    def _outcome(self, name: str, committed: bool, serving: Sequence[int]) -> str:
        verb = "updated" if name in self._old else "added"
        if not committed:
            return f"not {verb} (reload rolled back)"
        return f"{verb}; serving versions {sorted(serving)}" if serving else verb


def _describe(error: ServingError | None) -> str:
    if error is None:
        return "not loaded"
    return f"{error.code.name}: {error.message}"
