"""The per-app `ControlPlane` bundle that views (API and UI) reach through `control_plane()`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .config import Settings
from .db import Database
from .fleet import Fleet
from .traffic import Traffic


@dataclass(frozen=True)
class ControlPlane:
    settings: Settings
    db: Database
    fleet: Fleet
    traffic: Traffic


def control_plane() -> ControlPlane:
    return current_app.extensions["modelplane"]
