"""Jinja filters: one place decides how times, policies, states and diffs read on screen."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint

# State -> CSS tone. Colour is never the only signal: templates always print the state too.
TONES = {
    "in_sync": "ok",
    "AVAILABLE": "ok",
    "pending": "busy",
    "START": "busy",
    "LOADING": "busy",
    "UNLOADING": "idle",
    "END": "idle",
    "error": "bad",
    "unreachable": "bad",
    # Credentials (the tokens and admins page).
    "active": "ok",
    "expired": "idle",
    "revoked": "bad",
    "disabled": "bad",
}


def when(moment: datetime | str | None) -> str:
    """UTC to the second, e.g. "2025-11-22 01:02:03 UTC"; SQLite gives naive UTC datetimes."""
    if moment is None:
        return "never"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.removesuffix("Z"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def policy_text(policy: dict[str, Any] | None) -> str:
    """A model_version_policy (API shape) in words."""
    if not policy:
        return "latest 1 (default)"
    if "all" in policy:
        return "all versions"
    if "specific" in policy:
        return "versions " + ", ".join(str(v) for v in policy["specific"]["versions"])
    return f"latest {policy['latest']['num_versions']}"


def logging_text(logging: dict[str, Any] | None) -> str:
    """A logging_config (API shape) in words."""
    if not logging:
        return "no request logging"
    rate = logging["sampling_config"]["sampling_rate"]
    collector = logging["log_collector_config"]
    kind = collector["type"] or "tfrecord"
    return f"logs {rate:.4g} of requests to {collector['filename_prefix']} ({kind})"


def tone(state: str) -> str:
    return TONES.get(state, "idle")


def diff_lines(unified: str) -> list[tuple[str, str]]:
    """(css class, text) per line of a unified diff, so additions and removals stand out."""
    lines = []
    for line in unified.splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append((kind, line))
    return lines


def detail_text(detail: dict[str, Any] | None) -> str:
    """An audit entry's detail in one line: its message, else its fields, e.g.
    "address=10.0.0.1" for a failed sign-in or "scope=write" for a revoked token."""
    if not detail:
        return ""
    if detail.get("message"):
        return str(detail["message"])
    return ", ".join(f"{key}={value}" for key, value in sorted(detail.items()) if value is not None)


def register_filters(bp: Blueprint) -> None:
    for function in (when, policy_text, logging_text, tone, diff_lines, detail_text):
        bp.add_app_template_filter(function)
