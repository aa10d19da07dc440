"""HTML form fields <-> the ModelConfig the core validates.

The forms only coerce text into the protobuf-JSON shape the API accepts and hand it to
`revisions.parse_model_config`, so the browser and the API obey exactly the same rules; a
`ValidationError` names a proto field, which `FIELD_OF_ERROR` maps back to the input beside
which the message is shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tensorflow_serving.config.model_server_config_pb2 import ModelConfig

from .. import store
from ..db import Database
from ..revisions import ValidationError, parse_model_config

POLICIES = ("latest", "all", "specific")
FORM_INPUTS = (
    "name",
    "base_path",
    "policy",
    "num_versions",
    "versions",
    "log_rate",
    "log_type",
    "log_prefix",
)

# Proto field named by a ValidationError -> form input that shows it (labels conflict with the
# pinned versions, so their errors belong beside the versions input).
FIELD_OF_ERROR = {
    "name": "name",
    "base_path": "base_path",
    "model_platform": "form",
    "model_version_policy.latest.num_versions": "num_versions",
    "model_version_policy.specific.versions": "versions",
    "version_labels": "versions",
    "logging_config": "log_prefix",
    "logging_config.sampling_config.sampling_rate": "log_rate",
    "logging_config.log_collector_config.type": "log_type",
    "logging_config.log_collector_config.filename_prefix": "log_prefix",
}
VERSION_SEPARATORS = re.compile(r"[\s,]+")


@dataclass
class ModelForm:
    """The create/edit form as typed text, plus the errors to show beside each input."""

    name: str = ""
    base_path: str = ""
    policy: str = "latest"
    num_versions: str = "1"
    versions: str = ""
    # Request logging: no logging_config while the prefix (and the rate) are left empty.
    log_rate: str = ""
    log_type: str = ""
    log_prefix: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_request(cls, form: Mapping[str, str], name: str | None = None) -> ModelForm:
        """Read the posted inputs; `name` is fixed on edit (renaming is delete + create)."""
        return cls(
            name=(name if name is not None else form.get("name", "")).strip(),
            base_path=form.get("base_path", "").strip(),
            policy=form.get("policy", "latest"),
            num_versions=form.get("num_versions", "1").strip(),
            versions=form.get("versions", "").strip(),
            log_rate=form.get("log_rate", "").strip(),
            log_type=form.get("log_type", ""),
            log_prefix=form.get("log_prefix", "").strip(),
        )

    @classmethod
    def from_model(cls, model: Mapping[str, Any]) -> ModelForm:
        """Prefill from the API shape of a model (`revisions.model_to_json`)."""
        policy = model.get("model_version_policy") or {"latest": {"num_versions": 1}}
        kind = next(iter(policy))
        logging = model.get("logging_config") or {}
        return cls(
            name=model["name"],
            base_path=model["base_path"],
            policy=kind,
            num_versions=str(policy.get("latest", {}).get("num_versions", 1)),
            versions=", ".join(str(v) for v in policy.get("specific", {}).get("versions", [])),
            log_rate=str(logging["sampling_config"]["sampling_rate"]) if logging else "",
            log_type=logging["log_collector_config"]["type"] if logging else "",
            log_prefix=logging["log_collector_config"]["filename_prefix"] if logging else "",
        )

    def to_config(
        self, labels: Mapping[str, int] | None = None, log_roots: Sequence[str] = ()
    ) -> ModelConfig:
        """The validated ModelConfig with `labels` kept; raises ValidationError.

        `log_roots` are the directories request logs may go to (Settings.request_log_roots).
        """
        body: dict[str, Any] = {
            "name": self.name,
            "base_path": self.base_path,
            "model_platform": "tensorflow",
            "model_version_policy": self._policy(),
            "version_labels": dict(labels or {}),
        }
        logging = self._logging()
        if logging is not None:
            body["logging_config"] = logging
        return parse_model_config(body, log_roots=log_roots)

    def add_error(self, err: ValidationError) -> None:
        """Show `err` beside the input it is about (or above the form when none fits)."""
        if err.field in FORM_INPUTS or err.field in FIELD_OF_ERROR:
            key = FIELD_OF_ERROR.get(err.field, err.field)
            self.errors[key] = str(err).removeprefix(f"{err.field}: ")
        else:  # e.g. "version_labels.stable: ...": keep the label's name in the message
            self.errors[FIELD_OF_ERROR.get(err.field.split(".")[0], "form")] = str(err)

    def _logging(self) -> dict[str, Any] | None:
        """The logging_config typed, or None when both the prefix and the rate are empty.

        A rate without a prefix is not dropped: the core then says the prefix is required.
        """
        if not self.log_prefix and not self.log_rate:
            return None
        return {
            "sampling_config": {"sampling_rate": parse_rate(self.log_rate or "0", "log_rate")},
            "log_collector_config": {"type": self.log_type, "filename_prefix": self.log_prefix},
        }

    def _policy(self) -> dict[str, Any]:
        if self.policy == "all":
            return {"all": {}}
        if self.policy == "specific":
            return {"specific": {"versions": parse_versions(self.versions, "versions")}}
        if self.policy == "latest":
            return {"latest": {"num_versions": parse_positive(self.num_versions, "num_versions")}}
        raise ValidationError("policy", f"must be one of {', '.join(POLICIES)}")


def parse_positive(text: str, field_name: str) -> int:
    """A whole number >= 1 typed into `field_name`."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValidationError(field_name, "must be a whole number of at least 1")
    return int(text)


def parse_rate(text: str, field_name: str) -> float:
    """A sampling rate typed as a number; the core checks that it lies in [0, 1]."""
    try:
        return float(text)
    except ValueError:
        raise ValidationError(field_name, "must be a number between 0 and 1, e.g. 0.01") from None


def parse_versions(text: str, field_name: str) -> list[int]:
    """Versions typed as "1, 2 3"; the core checks ranges and duplicates."""
    parts = [part for part in VERSION_SEPARATORS.split(text) if part]
    if not parts:
        raise ValidationError(field_name, "list at least one version, e.g. 1, 2")
    return [parse_positive(part, field_name) for part in parts]


def update_model(
    db: Database,
    form: ModelForm,
    expected: int | None,
    actor: str,
    log_roots: Sequence[str] = (),
) -> store.StoredModel:
    """Replace a model's path and policy from the edit form, keeping its labels.

    Labels are moved by their own forms; the edit form carries none, so they are copied from
    the stored model. `expected` makes this safe: if anything (a label too) changed since the
    form was rendered, `replace_model` refuses with Conflict instead of undoing that change.
    """
    labels = store.get_model(db, form.name).config.version_labels
    return store.replace_model(db, form.to_config(labels, log_roots), expected, actor)
