"""JSON API under /api/v1. Views parse, call one core function, render; nothing else.

Every call needs a bearer token whose scope covers the call: GETs need `read`, other methods
`write`, and views marked `@requires("admin")` (planes, push, tokens, admins, audit) `admin`.
One guard checks it before any view runs, so a new view cannot forget it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import audit, auth, planes, store, traffic
from .context import control_plane
from .revisions import ValidationError, parse_model_config

bp = Blueprint("api", __name__, url_prefix="/api/v1")
IF_MATCH_RE = re.compile(r'^(?:W/)?"(\d+)"$')
READ_METHODS = ("GET", "HEAD", "OPTIONS")
View = TypeVar("View", bound=Callable[..., Any])


# -- plumbing ---------------------------------------------------------------------------------


def requires(scope: str) -> Callable[[View], View]:
    """Mark a view as needing more than its method's default scope."""

    def mark(view: View) -> View:
        view.required_scope = scope  # type: ignore[attr-defined]
        return view

    return mark


def required_scope() -> str:
    view = current_app.view_functions.get(request.endpoint or "")
    default = "read" if request.method in READ_METHODS else "write"
    return getattr(view, "required_scope", default)


@bp.before_request
def authenticate() -> Any:
    token = auth.bearer_token(request.headers.get("Authorization"))
    try:
        if token is None:
            raise auth.Refused("missing or invalid bearer token")
        principal = auth.authenticate_token(control_plane().db, token)
    except auth.Refused as err:
        response = jsonify(error=str(err))
        response.headers["WWW-Authenticate"] = 'Bearer realm="modelplane"'
        return response, 401
    needed = required_scope()
    if not auth.allows(principal.scope, needed):
        error = f"this call needs a token with the {needed} scope; this token has {principal.scope}"
        return jsonify(error=error), 403
    g.principal = principal
    return None


@bp.errorhandler(ValidationError)
def bad_request(err: ValidationError) -> Any:
    return jsonify(error=str(err), field=err.field), 400


@bp.errorhandler(store.NotFound)
def not_found(err: store.NotFound) -> Any:
    return jsonify(error=str(err.args[0])), 404


@bp.errorhandler(store.Conflict)
def conflict(err: store.Conflict) -> Any:
    return jsonify(error=str(err)), 409


@bp.errorhandler(HTTPException)
def http_error(err: HTTPException) -> Any:
    return jsonify(error=err.description), err.code


def actor() -> str:
    return g.principal.label


def json_body(required: bool = True) -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None and not required and not request.get_data():
        return {}
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def expected_revision(body: dict[str, Any]) -> int | None:
    """The revision a conditional write expects: `"revision"` in the body or `If-Match`."""
    from_body = body.get("revision")
    if from_body is not None and (isinstance(from_body, bool) or not isinstance(from_body, int)):
        raise ValidationError("revision", "must be an integer")
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return from_body
    match = IF_MATCH_RE.match(header.strip())
    if not match:
        raise ValidationError("If-Match", 'must be a quoted revision, e.g. "12"')
    from_header = int(match.group(1))
    if from_body is not None and from_body != from_header:
        raise ValidationError("revision", "disagrees with If-Match")
    return from_header


def model_response(model: store.StoredModel, status: int = 200) -> Response:
    response = jsonify(model.to_json())
    response.status_code = status
    response.headers["ETag"] = f'"{model.revision}"'
    return response


def changed() -> None:
    """Wake the pusher: the head moved."""
    control_plane().fleet.notify()


# -- models -----------------------------------------------------------------------------------


@bp.get("/models")
def list_models() -> Any:
    return jsonify(models=[m.to_json() for m in store.list_models(control_plane().db)])


@bp.post("/models")
def create_model() -> Any:
    config = parse_model_config(json_body(), log_roots=control_plane().settings.request_log_roots)
    model = store.create_model(control_plane().db, config, actor())
    changed()
    response = model_response(model, 201)
    response.headers["Location"] = f"/api/v1/models/{model.config.name}"
    return response


@bp.get("/models/<name>")
def get_model(name: str) -> Any:
    return model_response(store.get_model(control_plane().db, name))


@bp.put("/models/<name>")
def replace_model(name: str) -> Any:
    body = json_body()
    roots = control_plane().settings.request_log_roots
    config = parse_model_config(body, url_name=name, log_roots=roots)
    model = store.replace_model(control_plane().db, config, expected_revision(body), actor())
    changed()
    return model_response(model)


@bp.delete("/models/<name>")
def delete_model(name: str) -> Any:
    expected = expected_revision(json_body(required=False))
    store.delete_model(control_plane().db, name, expected, actor())
    changed()
    return "", 204


@bp.put("/models/<name>/labels/<label>")
def set_label(name: str, label: str) -> Any:
    body = json_body()
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationError("version", "must be a positive integer")
    db = control_plane().db
    model = store.set_label(db, name, label, version, expected_revision(body), actor())
    changed()
    return model_response(model)


@bp.delete("/models/<name>/labels/<label>")
def remove_label(name: str, label: str) -> Any:
    expected = expected_revision(json_body(required=False))
    model = store.remove_label(control_plane().db, name, label, expected, actor())
    changed()
    return model_response(model)


# -- revisions --------------------------------------------------------------------------------


@bp.get("/revisions")
def list_revisions() -> Any:
    limit = request.args.get("limit", default=100, type=int)
    revisions = store.list_revisions(control_plane().db, max(1, min(limit, 1000)))
    return jsonify(revisions=[r.to_json() for r in revisions])


@bp.get("/revisions/<int:number>")
def get_revision(number: int) -> Any:
    return jsonify(store.get_revision(control_plane().db, number).to_json(with_config=True))


@bp.get("/revisions/<int:number>/diff")
def diff_revision(number: int) -> Any:
    """Diff against `?against=<m>` (default: the revision before)."""
    against = request.args.get("against", default=max(number - 1, 0), type=int)
    diff = store.revision_diff(control_plane().db, against, number)
    return jsonify({"from": against, "to": number, **diff.to_json()})


@bp.post("/revisions/<int:number>/rollback")
def rollback(number: int) -> Any:
    revision = store.rollback(control_plane().db, number, actor())
    changed()
    return jsonify(revision.to_json(with_config=True)), 201


# -- data planes and push ---------------------------------------------------------------------


@bp.get("/dataplanes")
def list_dataplanes() -> Any:
    db = control_plane().db
    head = store.head(db).number
    return jsonify(dataplanes=[p.to_json(head) for p in planes.list_planes(db)])


@bp.post("/dataplanes")
@requires("admin")
def add_dataplane() -> Any:
    db = control_plane().db
    plane = planes.add_plane(db, json_body().get("address"), actor())
    changed()
    return jsonify(plane.to_json(store.head(db).number)), 201


@bp.get("/dataplanes/<int:plane_id>")
def get_dataplane(plane_id: int) -> Any:
    db = control_plane().db
    body = planes.get_plane(db, plane_id).to_json(store.head(db).number)
    body["push_results"] = planes.push_history(db, plane_id)
    return jsonify(body)


@bp.delete("/dataplanes/<int:plane_id>")
@requires("admin")
def delete_dataplane(plane_id: int) -> Any:
    planes.delete_plane(control_plane().db, plane_id, actor())
    return "", 204


@bp.get("/traffic")
def get_traffic() -> Any:
    """Requests/s, p50/p99 latency and errors by code, by model and by plane (`?model=`,
    `?span_s=`), from the scraper's window."""
    model, span_s = traffic.query(request.args)
    try:
        return jsonify(control_plane().traffic.series(model, span_s))
    except traffic.PrometheusError as err:
        return jsonify(error=str(err)), 502


@bp.post("/push")
@requires("admin")
def push() -> Any:
    """Push the head to every plane now and answer with the states it left them in."""
    cp = control_plane()
    audit.record(cp.db, actor(), "push.force", "all data planes")
    head = cp.fleet.cycle(force=True)
    return jsonify(revision=head, dataplanes=[p.to_json(head) for p in planes.list_planes(cp.db)])


@bp.get("/audit")
@requires("admin")
def audit_log() -> Any:
    limit = request.args.get("limit", default=200, type=int)
    return jsonify(entries=audit.recent(control_plane().db, max(1, min(limit, 1000))))


# -- credentials ------------------------------------------------------------------------------


@bp.get("/tokens")
@requires("admin")
def list_tokens() -> Any:
    return jsonify(tokens=[t.to_json() for t in auth.list_tokens(control_plane().db)])


@bp.post("/tokens")
@requires("admin")
def create_token() -> Any:
    """The token itself is in this answer only; afterwards only its name and state are."""
    body = json_body()
    db = control_plane().db
    name, days = body.get("name"), body.get("expires_in_days")
    token = auth.create_token(db, name, body.get("scope"), days, actor())
    return jsonify(token=token, **auth.get_token(db, name.strip()).to_json()), 201


@bp.post("/tokens/<name>/revoke")
@requires("admin")
def revoke_token(name: str) -> Any:
    return jsonify(auth.revoke_token(control_plane().db, name, actor()).to_json())


@bp.get("/admins")
@requires("admin")
def list_admins() -> Any:
    return jsonify(admins=[a.to_json() for a in auth.list_admins(control_plane().db)])


@bp.post("/admins/<username>/disable")
@requires("admin")
def disable_admin(username: str) -> Any:
    return jsonify(auth.disable_admin(control_plane().db, username, actor()).to_json())
