"""Authentication for every request, deny by default.

- Pages use a Flask-Login session (cookie) and CSRF tokens on every unsafe method.
- The API (/api/...) uses `Authorization: Bearer <token>` only. It ignores the session cookie
  entirely, so a page visited in the same browser cannot make API calls with it (and CSRF does not
  apply there).
- A route is reachable without an actor only when its view is marked `@public`; everything else
  answers 401 (API) or redirects to /login (pages). The route test walks `app.url_map` to keep it so.

The actor is read from the database on every request (one query with roles), so a role change or a
deactivation counts on the very next request; nothing about permissions is cached in the session.
"""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, abort, current_app, g, jsonify, make_response, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect

from keel.actor import SYSTEM, Actor
from keel.errors import KeelError

log = logging.getLogger("keel.auth")

__all__ = [
    "SYSTEM",
    "Actor",
    "AuthenticationRequired",
    "SessionUser",
    "current_actor",
    "init_app",
    "is_api_path",
    "public",
    "require_admin",
    "safe_next",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class AuthenticationRequired(KeelError):
    """Raised by `current_actor()` when nobody is signed in; answered like the deny-by-default hook."""


class SessionUser(UserMixin):
    """What Flask-Login keeps for a page session: the Actor, re-read from the database each request.
    Its id (what the cookie carries) is the session's secret, looked up in `keel_sessions` each time, so
    the server can end a session (see keel.auth.sessions)."""

    def __init__(self, actor: Actor, secret: str):
        self.actor = actor
        self.secret = secret

    def get_id(self) -> str:
        return self.secret


def public(view):
    """Mark a view as reachable without signing in. Every use needs a reason; the route test lists
    the public endpoints it expects so a new one gets reviewed."""
    view.keel_public = True
    return view


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def current_actor() -> Actor:
    actor = g.get("actor")
    if actor is None:
        raise AuthenticationRequired("authentication required")
    return actor


def require_admin() -> Actor:
    """The current actor if an administrator; otherwise the request ends with 403 (JSON for the API)."""
    actor = current_actor()
    if not actor.is_admin:
        if is_api_path(request.path):
            abort(make_response(jsonify(error="administrator rights required"), 403))
        abort(403)
    return actor


def safe_next(target: str | None) -> str | None:
    """`target` if it is a path on this site, else None: `//evil.com`, `/\\evil.com`,
    `https://evil.com` and anything with control characters are refused (no open redirect)."""
    if not target or not isinstance(target, str) or len(target) > 2000:
        return None
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


class PageSessionInterface(SecureCookieSessionInterface):
    """The signed session cookie, for pages only. An API request gets an empty session that is never
    saved: it neither reads a page session open in the same browser nor answers with a Set-Cookie
    (`?lang=en` on the API used to start one)."""

    def open_session(self, app, request):
        if is_api_path(request.path):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        if is_api_path(request.path):
            return
        super().save_session(app, session, response)


def _engine():
    return current_app.extensions["keel"].engine


def _load_session_user(secret: str) -> SessionUser | None:
    from keel.auth.directory import get_actor
    from keel.auth.sessions import session_user

    with _engine().connect() as conn:
        user_id = session_user(conn, secret, current_app.permanent_session_lifetime)
        actor = get_actor(conn, user_id) if user_id is not None else None
    return SessionUser(actor, secret) if actor is not None else None


def _api_unauthorized(message: str, invalid_token: bool = False):
    resp = jsonify(error=message)
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return resp


def _login_redirect():
    query = request.query_string.decode("utf-8", "replace")
    target = request.path + ("?" + query if query else "")
    return redirect(url_for("auth.login", next=safe_next(target)))


def _bearer_token() -> str | None:
    """The token of an `Authorization: Bearer` header; "" for any other (or an empty) header."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _is_public_endpoint(endpoint: str) -> bool:
    if endpoint == "static" or endpoint.endswith(".static"):
        return True
    return bool(getattr(current_app.view_functions.get(endpoint), "keel_public", False))


def _touch_token(token_id: int) -> None:
    """Note that a token is in use, if the database lets us right now: a request never waits for it."""
    from keel.auth.tokens import touch_token
    from keel.storage.db import without_waiting

    try:
        with without_waiting(_engine()) as conn:
            touch_token(conn, token_id)
    except sa.exc.OperationalError as e:
        log.info("token %s: last use not recorded (%s)", token_id, e.orig)


def _authenticate(csrf: CSRFProtect):
    g.actor = None
    g.token_id = None
    if request.routing_exception is not None or request.endpoint is None:
        return None  # no such route (404) or method (405): Flask answers that, nothing to protect
    is_public = _is_public_endpoint(request.endpoint)

    if is_api_path(request.path):
        token = _bearer_token()
        if token is not None:
            from keel.auth.directory import get_actor
            from keel.auth.tokens import find_token

            actor = None
            with _engine().connect() as conn:  # a read: an API read must not wait for the write lock
                found = find_token(conn, token) if token else None
                if found is not None:
                    actor = get_actor(conn, found[1])
            if actor is not None and found[2]:
                _touch_token(found[0])
            if actor is None:
                if not is_public:
                    return _api_unauthorized("invalid or revoked token", invalid_token=True)
            else:
                g.actor, g.token_id = actor, found[0]
        if g.actor is None and not is_public:
            return _api_unauthorized("authentication required")
        return None

    if current_user.is_authenticated:
        g.actor = current_user.actor
    if g.actor is None and not is_public:
        return _login_redirect()
    if request.method not in SAFE_METHODS:
        csrf.protect()  # raises CSRFError (400) without a valid token
    return None


def _on_authentication_required(_err: AuthenticationRequired):
    if is_api_path(request.path):
        return _api_unauthorized("authentication required")
    return _login_redirect()


def init_app(app: Flask) -> None:
    # CSRF is checked by `_authenticate` for pages only: the bearer-only API has no ambient credential.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.session_interface = PageSessionInterface()
    csrf = CSRFProtect(app)

    login_manager = LoginManager()
    login_manager.session_protection = "strong"
    login_manager.login_view = "auth.login"  # for anyone using flask_login.login_required as well
    login_manager.user_loader(_load_session_user)
    login_manager.init_app(app)

    app.before_request(lambda: _authenticate(csrf))
    app.register_error_handler(AuthenticationRequired, _on_authentication_required)

    from keel.auth import credentials, login

    credentials.init_app(app)
    app.register_blueprint(login.bp)
