"""The only authentication routes: the login page, logout, and the API's token endpoints and "who am I".
Both faces use `credentials.attempt_login`, so the page and the API share the same login limits; both
answer a refusal with 429 and a busy server with 503, each with Retry-After."""
from __future__ import annotations

import math
from pathlib import Path

import sqlalchemy as sa
from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, session, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired, Length

from keel.auth import SessionUser, current_actor, public, safe_next
from keel.auth.credentials import BUSY_RETRY_AFTER, LoginOutcome, attempt_login
from keel.auth.directory import get_actor, get_user, manager_of, roles_of
from keel.auth.passwords import MAX_LENGTH as MAX_PASSWORD_LENGTH
from keel.auth.sessions import end_session, start_session
from keel.auth.throttle import client_address
from keel.auth.tokens import issue_token, revoke_token
from keel.errors import NotFound
from keel.i18n import translate
from keel.storage.audit import record_event
from keel.storage.system import departments, users

# The app's own template folder is set by keel.web; pointing the blueprint at the same folder lets the
# login page render whatever order the parts are initialised in.
TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"

bp = Blueprint("auth", __name__, template_folder=str(TEMPLATES))

TOKEN_BODY_KEYS = frozenset({"username", "password", "name"})


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[InputRequired(), Length(max=150)])
    password = PasswordField(_l("Password"),
                             validators=[InputRequired(), Length(max=MAX_PASSWORD_LENGTH)])


def _engine() -> sa.Engine:
    return current_app.extensions["keel"].engine


def _home() -> str:
    """Where a login without `next` lands: the workbench when the web part serves one."""
    for rule in current_app.url_map.iter_rules():
        if rule.rule == "/workbench":
            return "/workbench"
    return "/"


def _not_now(outcome: LoginOutcome) -> tuple[int, str, int] | None:
    """(status, message, Retry-After seconds) for an attempt the limits refused or a busy server
    turned away; None when the password was checked."""
    if outcome.busy:
        return 503, translate("The server is busy checking other logins. Try again in a few seconds."), \
            BUSY_RETRY_AFTER
    if outcome.refusal is None:
        return None
    seconds = outcome.refusal.retry_after
    minutes = max(1, math.ceil(seconds / 60))
    if outcome.refusal.scope == "address":
        message = translate("Too many login attempts from your network address. Try again in %(minutes)s "
                            "minutes.", minutes=minutes)
    else:
        message = translate("Too many failed logins for this username. Try again in %(minutes)s minutes.",
                            minutes=minutes)
    return 429, message, seconds


def _client_address() -> str:
    # The peer, or the client a trusted proxy names (KEEL_PROXY_COUNT sets up ProxyFix in create_app).
    return client_address(request.remote_addr)


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    next_url = safe_next(request.args.get("next"))
    if request.method == "GET" and current_user.is_authenticated:
        return redirect(next_url or _home())
    form = LoginForm()
    error, status, retry_after = None, 200, None
    if form.validate_on_submit():
        outcome = attempt_login(_engine(), form.username.data, form.password.data, _client_address())
        if outcome.ok:
            with _engine().begin() as conn:
                secret = start_session(conn, outcome.user_id, current_app.permanent_session_lifetime)
                # None: deactivated since the password check, which makes it a failed login.
                actor = get_actor(conn, outcome.user_id) if secret is not None else None
                if actor is not None:
                    record_event(conn, actor, "auth.login", detail={"via": "page"})
            if actor is not None:
                # A fresh session for the signed-in user: nothing from before the login carries over.
                _clear_session()
                login_user(SessionUser(actor, secret))
                return redirect(next_url or _home())
            outcome = LoginOutcome(None)
        refused = _not_now(outcome)
        if refused is not None:
            status, error, retry_after = refused
        else:
            error, status = translate("Wrong username or password."), 401
    elif request.method == "POST":
        status = 422
    form.password.data = ""  # never echo a password back into the page
    page = render_template("auth/login.html", form=form, error=error, next=next_url), status
    return page if retry_after is None else (*page, {"Retry-After": str(retry_after)})


def _clear_session() -> None:
    """Empty the cookie session but keep the chosen language."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        with _engine().begin() as conn:
            if end_session(conn, current_user.secret):
                record_event(conn, current_actor(), "auth.logout")
    logout_user()
    _clear_session()
    return redirect(url_for("auth.login"))


def _json_error(status: int, message: str, **extra):
    resp = jsonify(error=message, **extra)
    resp.status_code = status
    return resp


@bp.post("/api/v1/auth/token")
@public
def create_token():
    """Exchange a username and password for an API token (shown once)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _json_error(400, translate("Send a JSON object with username and password."))
    errors: dict[str, list[str]] = {}
    for key in sorted(set(body) - TOKEN_BODY_KEYS):
        errors.setdefault(key, []).append(translate("Unknown field."))
    for key in ("username", "password"):
        if not isinstance(body.get(key), str) or not body[key]:
            errors.setdefault(key, []).append(translate("This field is required."))
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        errors.setdefault("name", []).append(translate("Must be text of at most %(max)s characters.", max=200))
    if errors:
        return jsonify(errors=errors), 422

    outcome = attempt_login(_engine(), body["username"], body["password"], _client_address())
    refused = _not_now(outcome)
    if refused is not None:
        status, message, retry_after = refused
        resp = _json_error(status, message)
        resp.headers["Retry-After"] = str(retry_after)
        return resp
    wrong = _json_error(401, translate("Wrong username or password."))
    if not outcome.ok:
        return wrong
    try:
        with _engine().begin() as conn:
            token = issue_token(conn, outcome.user_id, name)
            user = describe_user(conn, outcome.user_id)
    except NotFound:  # deactivated since the password check
        return wrong
    resp = jsonify(token=token, user=user)
    resp.status_code = 201
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.delete("/api/v1/auth/token")
def delete_token():
    """Revoke the token this request was made with (signing out an API client)."""
    actor = current_actor()
    with _engine().begin() as conn:
        revoke_token(conn, g.token_id, actor)
    return "", 204


@bp.get("/api/v1/me")
def me():
    """Who the token belongs to: roles, department, manager."""
    actor = current_actor()
    with _engine().connect() as conn:
        return jsonify(describe_user(conn, actor.user_id))


def describe_user(conn: sa.Connection, user_id: int) -> dict:
    """Who a user is, as the API shows it (no credentials, no hashes)."""
    user = get_user(conn, user_id)
    dept = None
    if user.department_id is not None:
        d = conn.execute(sa.select(departments.c.id, departments.c.code, departments.c.name,
                                   departments.c.name_en).where(departments.c.id == user.department_id)).first()
        dept = {"id": d.id, "code": d.code, "name": d.name, "name_en": d.name_en} if d else None
    manager = None
    manager_id = manager_of(conn, user_id)
    if manager_id is not None:
        m = conn.execute(sa.select(users.c.id, users.c.username, users.c.display_name)
                         .where(users.c.id == manager_id)).first()
        manager = {"id": m.id, "username": m.username, "display_name": m.display_name}
    roles = sorted(roles_of(conn, user_id))
    return {"id": user.id, "username": user.username, "display_name": user.display_name,
            "email": user.email, "locale": user.locale, "is_admin": bool(user.is_admin), "roles": roles,
            "department": dept, "manager": manager}
