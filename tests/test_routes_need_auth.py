"""Every route of a fully built app needs authentication unless it is on the reviewed list below:
without credentials, API routes answer 401 and pages redirect to /login, for every method a route
accepts. A new public route fails this test until someone adds it to PUBLIC_ENDPOINTS on purpose."""
from __future__ import annotations

import uuid

import pytest
from werkzeug.routing import AnyConverter, FloatConverter, IntegerConverter, UUIDConverter

from conftest import APPS, make_app
from helpers_registries import REGISTRIES
from keel.auth import is_api_path

# Reviewed: each of these must be reachable before signing in.
PUBLIC_ENDPOINTS = {
    "healthz",            # load balancer probe; says nothing about data
    "static",             # CSS and the one script, needed by the login page
    "auth.login",         # the login page itself
    "auth.create_token",  # POST /api/v1/auth/token: how an API client signs in
    "language.choose_language",  # POST /language: the login page's language switch (CSRF still applies)
}


def _is_static(endpoint: str) -> bool:
    return endpoint == "static" or endpoint.endswith(".static")


@pytest.fixture(scope="module")
def built_app(tmp_path_factory):
    """An app built by create_app, with the demo definitions applied when they are in the tree (routes
    generated from definitions must be covered too)."""
    tmp = tmp_path_factory.mktemp("routes")
    url = f"sqlite:///{tmp / 'keel.db'}"
    demo = APPS / "goal_agility"
    if demo.is_dir():
        try:
            from keel.apply import apply_app
            from keel.definitions.loader import load_app_dir
        except ImportError:  # the apply path is not in this tree yet: an empty app still has routes
            apply_app = None
        if apply_app is not None:
            from keel.actor import SYSTEM
            from keel.storage.db import create_engine, create_system_tables

            engine = create_engine(url)
            create_system_tables(engine)
            apply_app(engine, load_app_dir(demo, REGISTRIES), SYSTEM)
            engine.dispose()
    app = make_app(tmp, url)
    yield app
    app.extensions["keel"].engine.dispose()


def _dummy(converter) -> object:
    if isinstance(converter, IntegerConverter):
        return 1
    if isinstance(converter, FloatConverter):
        return 1.0
    if isinstance(converter, UUIDConverter):
        return uuid.UUID(int=1)
    if isinstance(converter, AnyConverter):
        return min(converter.items)
    return "x"


def _cases(app):
    """(endpoint, method, path) for every rule and method, as the router would dispatch it: when two
    rules share a path (POST and DELETE /api/v1/auth/token), a method goes to the one it matches."""
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        values = {name: _dummy(conv) for name, conv in rule._converters.items()}
        _, path = rule.build(values, append_unknown=False)
        for method in sorted(rule.methods):
            matched, _ = adapter.match(path, method=method)
            if matched == rule.endpoint:
                yield rule.endpoint, method, path


def test_public_endpoints_are_exactly_the_reviewed_ones(built_app):
    public = {rule.endpoint for rule in built_app.url_map.iter_rules()
              if getattr(built_app.view_functions[rule.endpoint], "keel_public", False)}
    unreviewed = {e for e in public - PUBLIC_ENDPOINTS if not _is_static(e)}
    assert not unreviewed, f"public endpoints not on the reviewed list: {sorted(unreviewed)}"


def test_reviewed_public_endpoints_answer_without_credentials(built_app):
    client = built_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200
    assert client.post("/api/v1/auth/token", json={}).status_code == 422  # reached the view: it validated


def test_every_other_route_needs_authentication(built_app):
    client = built_app.test_client()
    checked, failures = 0, []
    for endpoint, method, path in _cases(built_app):
        if endpoint in PUBLIC_ENDPOINTS or _is_static(endpoint):
            continue
        resp = client.open(path, method=method)
        checked += 1
        if is_api_path(path):
            ok = resp.status_code == 401 and resp.headers.get("WWW-Authenticate", "").startswith("Bearer") \
                and (method == "HEAD" or resp.get_json(silent=True) == {"error": "authentication required"})
        else:
            ok = resp.status_code == 302 and resp.headers["Location"].startswith("/login")
        if not ok:
            failures.append(f"{method} {path} ({endpoint}) -> {resp.status_code}")
    assert checked >= 3  # logout, token revocation, /me at the very least
    assert not failures, "routes reachable without authentication:\n" + "\n".join(failures)


def test_a_new_unmarked_route_is_private_by_default(tmp_path, sqlite_url):
    app = make_app(tmp_path, sqlite_url)
    app.add_url_rule("/api/v1/forgot-to-protect", "forgot_api", lambda: "data")
    app.add_url_rule("/forgot-to-protect", "forgot_page", lambda: "data", methods=["GET", "POST"])
    client = app.test_client()
    assert client.get("/api/v1/forgot-to-protect").status_code == 401
    assert client.post("/forgot-to-protect").headers["Location"].startswith("/login")
    assert client.get("/forgot-to-protect").headers["Location"] == "/login?next=/forgot-to-protect"
    app.extensions["keel"].engine.dispose()
