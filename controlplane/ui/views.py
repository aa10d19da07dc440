"""The `ui` blueprint: each view parses the request, calls one core function, renders.

Every endpoint except the login page and the static files requires a signed-in admin (one
`before_request` guard, so a new view cannot forget it); every POST carries a CSRF token
(CSRFProtect, see `init_app`); writes redirect afterwards so a reload never repeats them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, IntegrityError
from werkzeug.wrappers import Response

from .. import audit, auth, planes, store, traffic
from ..context import control_plane
from ..revisions import ValidationError
from . import pages
from .forms import ModelForm, parse_positive, update_model
from .templating import register_filters

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/ui/static",
)
register_filters(bp)
PUBLIC_ENDPOINTS = {"ui.login", "ui.static"}
# Scripts and styles only from our own static files: an injected <script> cannot run.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
Page = str | tuple[str, int] | Response


# -- guard, headers, errors -------------------------------------------------------------------


@bp.before_request
def require_login() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    return current_app.login_manager.unauthorized()


@bp.after_request
def harden(response: Response) -> Response:
    """Defence in depth: no framing, no MIME sniffing, and no cached pages after logout."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(store.NotFound)
def not_found(err: store.NotFound) -> tuple[str, int]:
    return render_template("error.html", title="Not found", message=err.args[0]), 404


@bp.errorhandler(CSRFError)
def csrf_refused(err: CSRFError) -> tuple[str, int]:
    message = "The form was missing its security token or it expired. Reload and try again."
    return render_template("error.html", title="Request refused", message=message), 400


@bp.errorhandler(IntegrityError)
def concurrent_change(_err: IntegrityError) -> tuple[str, int]:
    """A unique constraint caught a race (e.g. two admins creating the same model at once)."""
    message = "This conflicts with a change made at the same moment. Reload and try again."
    return render_template("error.html", title="Conflicting change", message=message), 409


@bp.errorhandler(DBAPIError)
def database_unavailable(_err: DBAPIError) -> tuple[str, int]:
    message = "The database did not answer; nothing was changed. Try again shortly."
    return render_template("error.html", title="Database unavailable", message=message), 503


def db() -> Any:
    return control_plane().db


def actor() -> str:
    return current_user.label


def changed(message: str) -> None:
    """A change was committed: tell the operator and wake the pusher."""
    flash(message, "success")
    control_plane().fleet.notify()


def expected_revision() -> int | None:
    """The revision the form was rendered at, so a stale form gets a conflict, not a win."""
    value = request.form.get("revision", "")
    return int(value) if value.isdigit() else None


# -- sign in and out --------------------------------------------------------------------------


def safe_next() -> str:
    """The `next` target only if it stays on this site (no open redirect)."""
    target = request.args.get("next", "")
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith(("//", "/\\")) and not parts.netloc:
        return target
    return url_for("ui.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page:
    if current_user.is_authenticated:
        return redirect(safe_next())
    if request.method == "GET":
        return render_template("login.html", username="")
    username = request.form.get("username", "").strip()[: auth.NAME_LENGTH]
    policy = control_plane().settings.login_throttle
    password = request.form.get("password", "")
    attempt = auth.sign_in(db(), policy, username, password, request.remote_addr)
    if attempt.retry_after:
        return throttled(username, attempt.retry_after)
    principal = attempt.principal
    if principal is None:
        error = "Wrong username or password."
        return render_template("login.html", username=username, error=error), 401
    session.clear()  # a fresh session on sign-in: nothing from before carries over
    session.permanent = True  # expires after SESSION_IDLE without a request
    login_user(principal)
    return redirect(safe_next())


def throttled(username: str, retry_after: int) -> Response:
    """429 with Retry-After: too many failures from this address or for this user name."""
    minutes = max(1, round(retry_after / 60))
    error = (
        f"Too many failed sign-ins. Try again in {retry_after} s (about {minutes} min); "
        "every further block lasts longer."
    )
    html = render_template("login.html", username=username, error=error)
    response = make_response(html, 429)
    response.headers["Retry-After"] = str(retry_after)
    return response


@bp.post("/logout")
def logout() -> Response:
    audit.record(db(), actor(), "logout", current_user.name)
    logout_user()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("ui.login"))


# -- dashboard and data planes ----------------------------------------------------------------


@bp.get("/")
def dashboard() -> Page:
    return render_template("dashboard.html", page=pages.dashboard(db()), address="", errors={})


@bp.get("/fragments/fleet")
def fleet_fragment() -> Page:
    """The live part of the dashboard and model pages, polled by live.js."""
    model = request.args.get("model") or None
    return render_template("_fleet.html", fleet=pages.fleet_status(db(), model), model=model)


@bp.post("/dataplanes")
def add_dataplane() -> Page:
    address = request.form.get("address", "").strip()
    try:
        plane = planes.add_plane(db(), address, actor())
    except (ValidationError, store.Conflict) as err:
        errors = {"address": str(err).removeprefix("address: ")}
        page = pages.dashboard(db())
        return render_template("dashboard.html", page=page, address=address, errors=errors), 400
    changed(f"Added data plane {plane.address}.")
    return redirect(url_for("ui.dashboard"))


@bp.route("/dataplanes/<int:plane_id>/delete", methods=["GET", "POST"])
def delete_dataplane(plane_id: int) -> Page:
    if request.method == "GET":
        return render_template("confirm_plane.html", plane=planes.get_plane(db(), plane_id))
    planes.delete_plane(db(), plane_id, actor())
    flash(f"Removed data plane {plane_id}.", "success")
    return redirect(url_for("ui.dashboard"))


@bp.post("/reconcile")
def reconcile() -> Response:
    """Wake the push/reconcile worker now instead of at its next tick."""
    audit.record(db(), actor(), "reconcile", "all data planes")
    control_plane().fleet.notify()
    flash("Checking every data plane now; states update below.", "info")
    return redirect(url_for("ui.dashboard"))


# -- traffic ----------------------------------------------------------------------------------


@bp.get("/traffic")
def traffic_page() -> Page:
    """Charts per model and per plane; traffic.js draws them from `traffic_data`."""
    return render_template("traffic.html", model=request.args.get("model") or None)


@bp.get("/traffic/data")
def traffic_data() -> Response | tuple[Response, int]:
    """The API's /traffic series for the signed-in browser (it has a session, not a token)."""
    try:
        model, span_s = traffic.query(request.args)
    except ValidationError as err:
        return jsonify(error=str(err), field=err.field), 400
    try:
        return jsonify(control_plane().traffic.series(model, span_s))
    except traffic.PrometheusError as err:
        return jsonify(error=str(err)), 502


# -- models -----------------------------------------------------------------------------------


@bp.route("/models/new", methods=["GET", "POST"])
def create_model() -> Page:
    if request.method == "GET":
        return render_template("model_new.html", form=ModelForm())
    form = ModelForm.from_request(request.form)
    try:
        config = form.to_config(log_roots=control_plane().settings.request_log_roots)
        model = store.create_model(db(), config, actor())
    except ValidationError as err:
        form.add_error(err)
        return render_template("model_new.html", form=form), 400
    except store.Conflict as err:
        form.errors["name"] = str(err)
        return render_template("model_new.html", form=form), 409
    changed(f"Created model {model.config.name} (revision {model.revision}).")
    return redirect(url_for("ui.model", name=model.config.name))


@bp.get("/models/<name>")
def model(name: str) -> Page:
    page = pages.model_page(db(), name)
    return render_model(page, ModelForm.from_model(page.model))


@bp.post("/models/<name>")
def update(name: str) -> Page:
    form = ModelForm.from_request(request.form, name=name)
    try:
        roots = control_plane().settings.request_log_roots
        stored = update_model(db(), form, expected_revision(), actor(), roots)
    except ValidationError as err:
        form.add_error(err)
        return render_model(pages.model_page(db(), name), form, status=400)
    except store.Conflict as err:
        form.errors["form"] = str(err)
        return render_model(pages.model_page(db(), name), form, status=409)
    changed(f"Saved model {name} (revision {stored.revision}).")
    return redirect(url_for("ui.model", name=name))


@bp.post("/models/<name>/labels")
def set_label(name: str) -> Page:
    label = request.form.get("label", "").strip()
    try:
        version = parse_positive(request.form.get("version", ""), "version")
        stored = store.set_label(db(), name, label, version, expected_revision(), actor())
    except (ValidationError, store.Conflict) as err:
        page = pages.model_page(db(), name)
        errors = label_errors(err)
        status = 409 if isinstance(err, store.Conflict) else 400
        return render_model(page, ModelForm.from_model(page.model), errors, label, status)
    message = f"Label {label} of {name} now points at version {version}"
    changed(f"{message} (revision {stored.revision}).")
    return redirect(url_for("ui.model", name=name))


@bp.post("/models/<name>/labels/<label>/delete")
def remove_label(name: str, label: str) -> Page:
    try:
        stored = store.remove_label(db(), name, label, expected_revision(), actor())
    except store.Conflict as err:
        page = pages.model_page(db(), name)
        form = ModelForm.from_model(page.model)
        return render_model(page, form, {"labels": str(err)}, status=409)
    changed(f"Removed label {label} from {name} (revision {stored.revision}).")
    return redirect(url_for("ui.model", name=name))


@bp.route("/models/<name>/delete", methods=["GET", "POST"])
def delete_model(name: str) -> Page:
    if request.method == "GET":
        return render_template("confirm_model.html", model=store.get_model(db(), name).to_json())
    try:
        number = store.delete_model(db(), name, expected_revision(), actor())
    except store.Conflict as err:
        flash(str(err), "error")
        return redirect(url_for("ui.model", name=name))
    changed(f"Deleted model {name} (revision {number}).")
    return redirect(url_for("ui.dashboard"))


def render_model(
    page: pages.ModelPage,
    form: ModelForm,
    label_errors: dict[str, str] | None = None,
    label: str = "",
    status: int = 200,
) -> tuple[str, int]:
    """The model page; `label_errors`/`label` refill the label form after a refusal."""
    html = render_template(
        "model.html", page=page, form=form, label_errors=label_errors or {}, new_label=label
    )
    return html, status


def label_errors(err: ValidationError | store.Conflict) -> dict[str, str]:
    """Which input of the label form an error belongs beside."""
    if isinstance(err, store.Conflict):
        return {"labels": str(err)}
    if err.field == "version" or err.field.endswith("versions"):
        return {"version": str(err).removeprefix(f"{err.field}: ")}
    return {"label": str(err).removeprefix(f"{err.field}: ")}


# -- revisions and audit ----------------------------------------------------------------------


@bp.get("/revisions")
def revisions() -> Page:
    return render_template("revisions.html", revisions=store.list_revisions(db()))


@bp.get("/revisions/diff")
def diff() -> Page:
    old, new = request.args.get("from", type=int), request.args.get("to", type=int)
    return render_template("diff.html", page=pages.diff_page(db(), old, new))


@bp.get("/revisions/<int:number>")
def revision(number: int) -> Page:
    return render_template("revision.html", page=pages.revision_page(db(), number))


@bp.route("/revisions/<int:number>/rollback", methods=["GET", "POST"])
def rollback(number: int) -> Page:
    """GET asks for confirmation showing what would change; POST rolls back."""
    if request.method == "GET":
        return render_template("confirm_rollback.html", page=pages.rollback_page(db(), number))
    created = store.rollback(db(), number, actor())
    changed(f"Rolled back to revision {number}: the new head is revision {created.number}.")
    return redirect(url_for("ui.revisions"))


@bp.get("/audit", endpoint="audit")
def audit_log() -> Page:
    return render_template("audit.html", entries=audit.recent(db()))


# -- tokens and admins ------------------------------------------------------------------------


@bp.get("/access")
def access() -> Page:
    """Every API token and admin, with what each may do and buttons to take it away."""
    return render_template("access.html", page=pages.access_page(db()))


@bp.route("/access/tokens/revoke", methods=["GET", "POST"])
def revoke_token() -> Page:
    """GET asks for confirmation; POST revokes (the name travels as a field, any text)."""
    if request.method == "GET":
        token = auth.get_token(db(), request.args.get("name", ""))
        return render_template("confirm_access.html", kind="token", token=token)
    name = request.form.get("name", "")
    try:
        auth.revoke_token(db(), name, actor())
    except store.Conflict as err:
        flash(str(err), "error")
        return redirect(url_for("ui.access"))
    flash(f"Revoked API token {name}: it is refused from its next call.", "success")
    return redirect(url_for("ui.access"))


@bp.route("/access/admins/disable", methods=["GET", "POST"])
def disable_admin() -> Page:
    """GET asks for confirmation; POST disables. Nobody disables themselves by accident."""
    username = request.values.get("username", "")
    if username == current_user.name:
        flash("You cannot disable yourself; ask another admin or use the CLI.", "error")
        return redirect(url_for("ui.access"))
    if request.method == "GET":
        admin = auth.get_admin(db(), username)
        return render_template("confirm_access.html", kind="admin", admin=admin)
    try:
        auth.disable_admin(db(), username, actor())
    except store.Conflict as err:
        flash(str(err), "error")
        return redirect(url_for("ui.access"))
    flash(f"Disabled admin {username}: their open sessions end at their next request.", "success")
    return redirect(url_for("ui.access"))
